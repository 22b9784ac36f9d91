"""The job's progress while it predicts, and the partition count it chooses by itself.

The progress test slows every micro-batch down by a fixed time per token (``slow_per_token_us``, see
``engine/faults.py``), so the job's length is set by its tokens rather than by the machine, and compares the
ETA printed halfway through with the time the job really took to finish.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparkinfer as si
from sparkinfer.engine import faults
from sparkinfer.spark import partitioning, progress
from sparkinfer.spark.job import Job, run
from sparkinfer.spark.progress import SAMPLE_EVERY, Progress, Sender, Snapshot, duration, estimate

INTERVAL = 1.0  # seconds between progress lines in the job test


def _wait_for(progress: Progress, rows: int) -> Snapshot:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        snapshot = progress.snapshot()
        if snapshot.done >= rows:
            return snapshot
        time.sleep(0.01)
    raise AssertionError(f"the datagrams never arrived: {progress.snapshot()}")


def test_progress_sums_the_tasks_datagrams_ignores_strays_and_takes_commits_as_exact() -> None:
    with Progress(100, interval=3600) as progress:
        address = progress.start_chunk(0)
        stray = Sender(address.rsplit("/", 1)[0] + "/another-job.0")
        stray(40, 400, 40, 400)
        stray.close()
        first, second = Sender(address), Sender(address)
        first(4, 40, 20, 500)  # 20 rows tokenized at 25 tokens each, 4 of them done
        first.flush()
        second(6, 60, 30, 750)
        second.close()
        snapshot = _wait_for(progress, 10)
        assert (snapshot.done, snapshot.tokens, snapshot.total) == (10, 100, 100)
        # 90 rows left at 10 rows a run so far; 100 rows at 25 tokens each are 2,500 tokens, 2,400 left at 100
        # a run so far. Without a history to fit, the ETA is the geometric mean of the two.
        assert snapshot.elapsed is not None and snapshot.eta is not None
        by_rows, by_tokens = 90 / 10 * snapshot.elapsed, 2400 / 100 * snapshot.elapsed
        assert snapshot.eta == pytest.approx(math.sqrt(by_rows * by_tokens), rel=0.05)
        assert snapshot.rows_per_second == pytest.approx(10 / snapshot.elapsed, rel=0.05)
        progress.commit(12, 130)  # the chunk's exact counts replace what its tasks said
        first(5, 50, 0, 0)  # a late datagram of the committed chunk
        first.close()
        time.sleep(0.3)
        assert (progress.snapshot().done, progress.snapshot().tokens) == (12, 130)
        next_chunk = Sender(progress.start_chunk(1))
        next_chunk(3, 30, 3, 30)
        next_chunk.close()
        assert _wait_for(progress, 15).done == 15


def test_the_last_rows_are_logged_at_once_not_an_interval_late(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sparkinfer")
    with Progress(10, interval=3600) as progress:
        sender = Sender(progress.start_chunk(0))
        sender(10, 100, 10, 100)
        sender.close()
        _wait_for(progress, 10)
        deadline = time.monotonic() + 3 * SAMPLE_EVERY
        while time.monotonic() < deadline and not caplog.records:
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["sparkinfer: 10/10 rows (100.0%) predicted; writing and committing"], lines


def test_the_eta_fits_a_cost_per_row_and_per_token_to_a_longest_first_history() -> None:
    rng = np.random.default_rng(7)
    lengths = np.sort(rng.integers(5, 250, size=2000))[::-1]  # longest first, as the engine computes them
    per_row, per_token = 0.004, 0.0002
    rows, tokens = np.arange(1, 2001), np.cumsum(lengths)
    seconds = per_row * rows + per_token * tokens
    samples = [(float(seconds[i]), int(rows[i]), int(tokens[i])) for i in range(49, 1000, 50)]
    at = 999  # halfway through the rows, 2/3 through the tokens
    truth = seconds[-1] - seconds[at]
    eta = estimate(samples, 2000 - rows[at], tokens[-1] - tokens[at])
    assert eta == pytest.approx(truth, rel=1e-6)
    # Each rate alone is wrong by the length spread; the truth lies between them.
    by_rows, by_tokens = (2000 - rows[at]) * seconds[at] / rows[at], (tokens[-1] - tokens[at]) * seconds[at] / tokens[at]
    assert by_tokens < 0.9 * truth < truth * 1.1 < by_rows


def test_snapshot_lines_and_durations() -> None:
    assert [duration(s) for s in (None, 12.4, 245, 7380)] == ["?", "12s", "4m05s", "2h03m"]
    waiting = Snapshot(0, 19444, 0, None, None, None, None)
    assert waiting.line() == "0/19,444 rows (0.0%), waiting for the first rows (loading the model)"
    going = Snapshot(9722, 19444, 1_000_000, 100.0, 97.22, 10_000.0, 137.0)
    assert going.line() == "9,722/19,444 rows (50.0%), 97.2 rows/s, 10,000 tokens/s, ETA 2m17s"
    done = Snapshot(19444, 19444, 2_000_000, 200.0, 97.22, 10_000.0, 0.0)
    assert done.line() == "19,444/19,444 rows (100.0%) predicted; writing and committing"


def test_partitions_for_fills_the_slots_in_a_few_waves_of_full_buffers() -> None:
    assert partitioning.partitions_for(19_444, 2, 4096) == 4
    assert partitioning.partitions_for(100, 8, 4096) == 8  # every slot, even with small tasks
    assert partitioning.partitions_for(3, 8, 4096) == 3  # never more tasks than rows
    assert partitioning.partitions_for(0, 8, 4096) == 1
    assert partitioning.partitions_for(10**9, 100, 4096) == 100 * partitioning.WAVES
    assert partitioning.partitions_for(50_000, 4, 4096) == 12
    with pytest.raises(si.SpecError, match="slots must be a positive int"):
        partitioning.partitions_for(10, 0, 4096)


class _MonotonicTimes(logging.Handler):
    """Keeps ``(time.monotonic(), record)`` for each record, stamped as it is emitted (in the logging thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record))


@pytest.fixture(scope="module")
def slow_workers(spark: Any) -> Iterator[None]:
    """Python workers whose micro-batches sleep 2 ms per token: about 20 s per task here."""
    environment = spark.sparkContext.environment
    environment[faults.ENV] = "slow_per_token_us=2000"
    yield
    del environment[faults.ENV]


def test_a_one_file_job_runs_on_every_slot_and_its_eta_holds_halfway(
    spark: Any, slow_workers: None, tiny_classifier: str, docs: list[str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Times are the monotonic clock's, taken as each line is logged: a record's `created` is the wall clock,
    which a CI machine once stepped 13 s forward in mid-run (its lines' own `elapsed` stayed 1 s apart)."""
    source = tmp_path / "one_file.parquet"
    texts = [docs[i % len(docs)] for i in range(480)]
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), source)
    assert spark.read.parquet(str(source)).rdd.getNumPartitions() == 1
    job = Job(input=str(source), output=str(tmp_path / "out"), key="id", progress_interval=INTERVAL,
              spec=si.ModelSpec(tiny_classifier, task="classification", max_length=64, max_batch_size=8))
    caplog.set_level(logging.INFO, logger="sparkinfer")
    logged = _MonotonicTimes()
    logging.getLogger("sparkinfer").addHandler(logged)
    try:
        report = run(spark, job)
    finally:
        logging.getLogger("sparkinfer").removeHandler(logged)
    assert report.rows_out == len(texts)
    assert report.partitioning == {"partitions": 2, "slots": 2, "rows": len(texts), "input_partitions": 1,
                                   "chosen_by": "auto"}
    assert report.metrics.model_loads == 2  # one per task, each in its own Python worker
    lines = [(t, r.progress) for t, r in logged.records if hasattr(r, "progress")]
    gaps = [b - a for (a, _), (b, _) in zip(lines, lines[1:])]
    assert max(gaps) < 2 * INTERVAL, gaps
    # The prediction runs from the first rows done to the first line with every row done (give or take half
    # an interval); writing and committing follow, which the ETA does not cover.
    moving = [(t, s) for t, s in lines if s.eta is not None and s.done < len(texts)]
    assert len(moving) >= 8, [s.line() for _, s in lines]
    start = moving[0][0] - moving[0][1].elapsed
    # The driver logs the first snapshot with every row done at once (within a second); where the tasks' last
    # datagrams reach it only after the commit (a loaded driver), the commit's own line marks the end.
    committed = next(t for t, r in logged.records if "committed:" in r.getMessage())
    end = min([t - SAMPLE_EVERY / 2 for t, s in lines if s.done == len(texts)] + [committed])
    when, snapshot = min(moving, key=lambda item: abs(item[0] - (start + end) / 2))
    timeline = [(round(t - start, 1), s.line()) for t, s in lines if s.done]
    assert snapshot.eta == pytest.approx(end - when, rel=0.5), (snapshot.line(), end - when, timeline)
    assert 0 < snapshot.done < len(texts) and snapshot.tokens_per_second > 0


def test_a_prediction_column_on_one_partition_warns_that_the_slots_idle(
    spark: Any, slow_workers: None, tiny_classifier: str, docs: list[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Column API cannot see its DataFrame; its tasks tell the driver's watch when they start."""
    monkeypatch.setattr(progress, "WATCH_GRACE", 1.0)
    caplog.set_level(logging.WARNING, logger="sparkinfer")
    rows = spark.createDataFrame([(d[:200],) for d in docs[:64]], "text string")
    column = si.classify("text", tiny_classifier, max_length=64, max_batch_size=8)
    one, two = rows.coalesce(1), si.repartition_for_inference(rows.coalesce(1), rows=64)
    assert two.rdd.getNumPartitions() == 2
    assert two.withColumn("p", column).where("p.label is not null").count() == 64
    assert not [r for r in caplog.records if "idle" in r.getMessage()]
    assert one.withColumn("p", column).where("p.label is not null").count() == 64
    warned = [r.getMessage() for r in caplog.records if "idle" in r.getMessage()]
    assert len(warned) == 1 and "has run on 1 task(s)" in warned[0] and "2 task slots" in warned[0], warned
