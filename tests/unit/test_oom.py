"""Out-of-memory recovery: split the micro-batch in half, retry, remember the smaller token budget.

The out-of-memory is injected by wrapping the cached model's head so that it raises torch's own
``torch.cuda.OutOfMemoryError`` (what CUDA raises; it can be constructed without a GPU) on micro-batches
of more than N rows: no hook in sparkinfer itself. The GPU test runs into a real one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sparkinfer import InferenceError, ModelSpec, SpecError
from sparkinfer.engine import Metrics, cache, run, run_stream
from tests.unit.helpers import TOLERANCE, ClassifierOracle, assert_classification_matches

pytestmark = pytest.mark.usefixtures("empty_cache")

Install = Callable[..., list[int]]


@pytest.fixture
def oom_above(monkeypatch: pytest.MonkeyPatch) -> Install:
    """``oom_above(spec, n)``: the cached model of `spec` runs out of memory on more than `n` rows.

    Returns the row count of every micro-batch the head was given, failed ones included.
    """

    def install(spec: ModelSpec, rows: int, error: Callable[[], Exception] | None = None) -> list[int]:
        import torch

        loaded, _ = cache.get_model(spec)
        forward = loaded.head.forward
        seen: list[int] = []

        def limited(input_ids: Any, attention_mask: Any) -> Any:
            seen.append(int(input_ids.shape[0]))
            if input_ids.shape[0] > rows:
                if error is not None:
                    raise error()
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return forward(input_ids, attention_mask)

        monkeypatch.setattr(loaded.head, "forward", limited)
        return seen

    return install


def test_an_injected_oom_splits_and_the_outputs_equal_the_unsplit_run(
    tiny_classifier: str,
    classifier_oracle: Callable[[str], ClassifierOracle],
    docs: list[str],
    oom_above: Install,
) -> None:
    texts: list[str | None] = [None if i % 11 == 5 else docs[i] for i in range(80)]
    spec = ModelSpec(tiny_classifier, task="classification", max_length=64, batch_tokens=2048, max_batch_size=64)
    unsplit, clean = run(spec, pa.array(texts, pa.string()))
    assert clean.oom_splits == 0

    seen = oom_above(spec, 5)
    split, metrics = run(spec, pa.array(texts, pa.string()))

    failed = [n for n in seen if n > 5]
    assert failed and failed[0] > 5 * 4  # the first, planned batch was far over the limit
    assert metrics.oom_splits == len(failed)  # one split per out-of-memory
    assert metrics.micro_batches == len(seen) - len(failed)
    assert metrics.rows == len(texts) and metrics.micro_batches > clean.micro_batches
    for got, expected in zip(split.to_pylist(), unsplit.to_pylist()):
        if expected is None:
            assert got is None
        else:
            assert got["label"] == expected["label"]
            assert got["score"] == pytest.approx(expected["score"], abs=TOLERANCE)
    assert_classification_matches(split, texts, classifier_oracle(tiny_classifier), max_length=64)


def test_the_smaller_budget_is_kept_for_the_rest_of_the_stream(
    tiny_classifier: str, classifier_oracle: Callable[[str], ClassifierOracle], oom_above: Install
) -> None:
    import transformers

    # Distinct rows (duplicates would be computed once) of one length, so that the token budget is a row count:
    # 16 rows fit the budget, 4 fit the memory.
    words = "fox dog cat cow owl bee ant elk hen ram pig bat eel gnu rat hog".split()  # one token each
    texts = [f"the quick brown {a} jumps over the lazy {b}" for a in words for b in words[:4]]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_classifier)
    assert {len(tokenizer(t)["input_ids"]) for t in texts} == {11} and len(set(texts)) == 64
    spec = ModelSpec(tiny_classifier, task="classification", batch_tokens=16 * 11, max_batch_size=16, buffer_rows=32)
    seen = oom_above(spec, 4)
    calls: list[Metrics] = []
    batches = [pa.array(texts[i : i + 16], pa.string()) for i in range(0, 64, 16)]  # two chunks of 32 rows

    outs = list(run_stream(spec, batches, on_metrics=calls.append))

    assert [len(o) for o in outs] == [16] * 4
    assert seen[:3] == [16, 8, 4]  # 16 -> 8 -> 4 rows, then the budget holds
    assert all(n <= 4 for n in seen[2:])
    assert [m.oom_splits for m in calls] == [2, 0]  # the second chunk is planned within the smaller budget
    assert [m.micro_batches for m in calls] == [8, 8]
    assert_classification_matches(pa.concat_arrays(outs), list(texts), classifier_oracle(tiny_classifier))


def test_a_single_row_that_does_not_fit_names_its_length(tiny_classifier: str, oom_above: Install) -> None:
    import transformers

    text = "a row that does not fit in memory even on its own"
    spec = ModelSpec(tiny_classifier, task="classification")
    oom_above(spec, 0)
    tokens = len(transformers.AutoTokenizer.from_pretrained(tiny_classifier)(text)["input_ids"])
    with pytest.raises(InferenceError, match=rf"a single row of {tokens} tokens does not fit in the memory of cpu"):
        run(spec, pa.array(["short", text], pa.string()))


def test_other_errors_are_bisected_to_a_row_not_taken_for_an_oom(
    tiny_classifier: str, oom_above: Install, docs: list[str]
) -> None:
    """Any other error is a row the model cannot handle: bisect (see test_on_error.py), no OOM split."""
    spec = ModelSpec(tiny_classifier, task="classification")
    seen = oom_above(spec, 0, error=lambda: RuntimeError("shape mismatch"))
    with pytest.raises(InferenceError, match=r"row \d+ of this task's input .*RuntimeError: shape mismatch") as info:
        run(spec, pa.array(docs[:20], pa.string()))
    assert isinstance(info.value.__cause__, RuntimeError)
    # Halved from the first planned batch down to one row: each failing first half is split again.
    assert seen[0] > 1 and seen[-1] == 1
    assert all(later == earlier // 2 for earlier, later in zip(seen, seen[1:]))


@pytest.mark.gpu
def test_a_real_cuda_oom_is_split(minilm_path: str, docs: list[str]) -> None:
    """Cap this process's share of the GPU so that one planned batch cannot fit, then compare with a clean run."""
    import torch

    long_texts = [" ".join(docs[i : i + 40]) for i in range(64)]  # every row truncated at 512 tokens
    spec = ModelSpec(minilm_path, task="embedding", max_length=512, batch_tokens=64 * 512, max_batch_size=64)
    clean, _ = run(spec.with_options(batch_tokens=512, max_batch_size=1), pa.array(long_texts, pa.string()))
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    # 96 MiB above the weights: one 512-token row needs a few MiB, 64 of them (FFN activations alone:
    # 64 x 512 x 1536 x 2 bytes = 96 MiB) cannot fit.
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 96 * 2**20) / total)
    try:
        out, metrics = run(spec, pa.array(long_texts, pa.string()))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert metrics.oom_splits > 0
    got, expected = np.asarray(out.to_pylist()), np.asarray(clean.to_pylist())
    assert (np.sum(got * expected, axis=1) >= 0.999).all()


def test_the_environment_fault_hook_injects_an_oom_and_rejects_garbage(
    tiny_classifier: str,
    classifier_oracle: Callable[[str], ClassifierOracle],
    docs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sparkinfer.engine import faults

    spec = ModelSpec(tiny_classifier, task="classification", max_length=64, batch_tokens=2048)
    texts = pa.array(docs[:40], pa.string())
    unsplit, clean = run(spec, texts)
    monkeypatch.setenv(faults.ENV, "oom_above_rows=3")
    split, metrics = run(spec, texts)
    assert clean.oom_splits == 0 and metrics.oom_splits > 0
    for got, want in zip(split.to_pylist(), unsplit.to_pylist()):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=TOLERANCE)
    assert_classification_matches(split, texts.to_pylist(), classifier_oracle(tiny_classifier), max_length=64)
    monkeypatch.setenv(faults.ENV, "oom_above=3")
    with pytest.raises(SpecError, match="oom_above_rows"):
        run(spec, texts)
