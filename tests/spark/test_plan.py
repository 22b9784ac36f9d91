"""`si.plan` and ``sparkinfer plan``: token counts against the tokenizer itself, the JSON, the plot, calibration.

The token counts are checked against transformers' own tokenizer called on each text (truncation at the
model's 256 tokens, special tokens included), which shares no code with the engine's batch tokenization.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparkinfer as si
from sparkinfer.errors import SpecError
from sparkinfer.spark import partitioning
from sparkinfer.spark.job import Job
from sparkinfer.spark.plan import plan_main
from tests.spark.helpers import DOCS_PARQUET, ON_CPU

pytestmark = pytest.mark.spark

NULLS = 4


@pytest.fixture(scope="module")
def docs_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The 600 docstrings plus `NULLS` null texts, as one Parquet file (one partition, file order)."""
    table = pq.read_table(DOCS_PARQUET).select(["id", "text"])
    nulls = pa.table({"id": pa.array(range(-NULLS, 0), pa.int64()), "text": pa.array([None] * NULLS, pa.string())})
    path = tmp_path_factory.mktemp("plan") / "docs"
    path.mkdir()
    pq.write_table(pa.concat_tables([table, nulls]), path / "part-0.parquet")
    return str(path)


@pytest.fixture(scope="module")
def direct_counts(minilm_path: str) -> tuple[list[int], int]:
    """Tokens of each docstring from transformers' tokenizer, one text at a time: (truncated counts, texts
    longer than 256 tokens)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    texts = pq.read_table(DOCS_PARQUET).column("text").to_pylist()
    full = [len(tokenizer(t)["input_ids"]) for t in texts]
    truncated = [len(tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts]
    return truncated, sum(n > 256 for n in full)


def test_token_quantiles_match_the_tokenizer_on_every_row(spark: Any, docs_path: str, minilm_path: str,
                                                          direct_counts: tuple[list[int], int]) -> None:
    counts, longer = direct_counts
    got = si.plan(spark, docs_path, si.ModelSpec(minilm_path, task="embedding"), sample=10_000)

    assert (got.rows, got.texts, got.sampled_rows, got.null_rows, got.max_length) == (604, 604, 604, NULLS, 256)
    assert list(got.lengths) == counts  # every row, in file order
    expected = np.quantile(counts, [0.5, 0.9, 0.99])
    assert [got.tokens.p50, got.tokens.p90, got.tokens.p99] == pytest.approx(expected.tolist(), abs=1e-9)
    assert (got.tokens.max, got.tokens.mean) == (max(counts), pytest.approx(float(np.mean(counts))))
    assert got.truncated_fraction == pytest.approx(longer / len(counts)) and 0 < longer < len(counts)
    assert got.projection is None and got.projected_seconds is None and got.to_dict()["projected_seconds"] is None
    assert got.recommended["partitions"] == partitioning.partitions_for(604, got.cluster.slots, 4096)
    assert got.recommended["chunk_rows"] == 100_000  # without calibration: the job's default
    assert got.recommended["batch_tokens"] in [p.batch_tokens for p in got.padding]
    assert all(0 < p.efficiency <= 1 for p in got.padding)


def test_a_sample_is_some_of_the_rows(spark: Any, docs_path: str, minilm_path: str,
                                      direct_counts: tuple[list[int], int]) -> None:
    got = si.plan(spark, spark.read.parquet(docs_path), si.ModelSpec(minilm_path, task="embedding"), sample=150)

    assert got.sampled_rows == 150 and got.input == "DataFrame"
    assert len(got.lengths) == 150 - got.null_rows
    assert not Counter(got.lengths) - Counter(direct_counts[0])  # a sub-multiset of the rows' counts


def test_plan_command_prints_one_json_object_and_writes_the_plot(
    spark: Any, docs_path: str, minilm_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from PIL import Image

    png = tmp_path / "plan.png"
    code = plan_main(["--input", docs_path, "--model", minilm_path, "--task", "embedding", "--sample", "100",
                      "--batch-tokens", "2048", "--json", "--plot", str(png), "--master", "local[2]"])
    out = capsys.readouterr().out

    assert code == 0
    got = json.loads(out)  # the whole of stdout is one object
    assert (got["rows"], got["sampled_rows"], got["batch_tokens"]) == (604, 100, 2048)
    assert set(got["tokens"]) == {"p50", "p90", "p99", "max", "mean"}
    assert all(isinstance(v, (int, float)) for v in got["tokens"].values()) and isinstance(got["tokens"]["max"], int)
    assert isinstance(got["truncated_fraction"], float) and 0 <= got["truncated_fraction"] <= 1
    assert set(got["recommended"]) == {"batch_tokens", "partitions", "chunk_rows"}
    assert all(isinstance(v, int) and v > 0 for v in got["recommended"].values())
    assert got["projected_seconds"] is None and got["calibration"] is None
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 600


def test_calibration_projects_the_job_on_a_given_cluster_shape(
    spark: Any, docs_path: str, tiny_classifier: str, tmp_path: Path
) -> None:
    job = Job(input=docs_path, output=str(tmp_path / "out"), spec=si.ModelSpec(tiny_classifier, task="classification",
              **ON_CPU), key="id", chunk_rows=250, format="parquet")
    got = si.plan(spark, job, sample=200, calibrate=96, executors=2, slots_per_executor=2)

    cal, p = got.calibration, got.projection
    assert cal is not None and p is not None
    assert (cal.rows, cal.chunks, sum(cal.chunk_rows), cal.task_cpus) == (96, 3, 96, 1)  # chunks of at least 32
    assert cal.seconds >= cal.compute_seconds > 0 and cal.seconds_per_padded_token > 0 and cal.rows_per_second > 0
    assert 0 < p.low <= p.seconds <= p.high and p.seconds == got.projected_seconds
    assert p.seconds == pytest.approx(p.fixed_seconds + p.compute_seconds)
    assert (got.cluster.slots, p.slots, p.chunks) == (4, 4, math.ceil(604 / 250))
    assert p.partitions == partitioning.partitions_for(math.ceil(604 / 3), 4, 4096) and p.waves == 1
    assert [c[0] for c in p.curve] == [1, 2, 3, 4]
    assert all(low <= mid <= high for _, mid, low, high in p.curve)
    assert p.curve[0][1] >= p.curve[-1][1]  # more executors are never slower
    got.save_plot(str(tmp_path / "calibrated.png"))
    assert (tmp_path / "calibrated.png").stat().st_size > 10_000
    assert "projected for batch_tokens 4096 on 4 slot(s)" in got.summary()


def test_bad_options_are_one_line_errors(spark: Any, docs_path: str, minilm_path: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    spec = si.ModelSpec(minilm_path, task="embedding")
    with pytest.raises(SpecError, match=r"executors=2 needs slots_per_executor or gpus_per_executor"):
        si.plan(spark, docs_path, spec, executors=2)
    with pytest.raises(SpecError, match=r"plan: sample must be a positive int \(got 0\)"):
        si.plan(spark, docs_path, spec, sample=0)
    with pytest.raises(SpecError, match=r"has no column\(s\) \['body'\]"):
        si.plan(spark, docs_path, spec, input_cols=["body"])
    base = ["--input", docs_path, "--model", minilm_path, "--task", "embedding"]
    assert plan_main([*base, "--calibrate", "-1"]) == 2
    with pytest.raises(SystemExit) as exit_:  # argparse's own errors exit, as `sparkinfer run`'s do
        plan_main(base[:2])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "sparkinfer plan: error: plan: calibrate must be a positive int or None (got -1)" in err
    assert "the following options are required: --model, --task" in err
