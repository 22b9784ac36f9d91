"""Host memory is bounded by buffer_rows and the token budget, not by the size of the Arrow batch.

The measurement runs in a fresh Python process, where peak RSS (``ru_maxrss``) starts from a known state:
the tiny classifier runs over one Arrow batch of 1000 long texts, then over one of 10000, with
``buffer_rows=500`` and a small token budget. If memory were proportional to the Arrow batch, the second
run would raise the peak far above the first one's; bounded, it adds little beyond its own input (built
inside the process, about 8 MiB) and output column.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    import pyarrow as pa
    from sparkinfer import ModelSpec
    from sparkinfer.engine import run_stream

    model, buffer_rows = sys.argv[1], int(sys.argv[2])
    spec = ModelSpec(model, task="classification", max_length=64, batch_tokens=2048, buffer_rows=buffer_rows)
    text = " ".join(f"word{i} punctuation, numbers 123.{i}; accents éü" for i in range(10))  # ~170 tokens

    def peak_growth(rows):
        batch = pa.array([f"{r} {text}" for r in range(rows)])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = list(run_stream(spec, [batch]))
        assert len(out) == 1 and len(out[0]) == rows and out[0].null_count == 0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, batch.nbytes // 1024

    list(run_stream(spec, [pa.array(["warm up " * 40] * 8)]))  # model loaded, allocator warm
    small, small_input = peak_growth(1000)
    large, large_input = peak_growth(10000)
    print(json.dumps({"small_kib": small, "large_kib": large, "small_input_kib": small_input,
                      "large_input_kib": large_input}))
    """
)


def _measure(model: str, buffer_rows: int) -> dict[str, int]:
    result = subprocess.run([sys.executable, "-c", _MEASURE, model, str(buffer_rows)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def test_peak_memory_does_not_grow_with_the_arrow_batch(tiny_classifier: str) -> None:
    measured = _measure(tiny_classifier, buffer_rows=500)
    assert measured["large_input_kib"] > 9 * measured["small_input_kib"]
    # Tokenizing a whole 10000-row batch at once (encodings keep the tokens cut off by truncation as
    # overflow) raises the peak by about 250 MiB more (measured with buffer_rows=10000); chunks of 500 rows
    # keep the 10000-row run within its own input and output of the 1000-row run's peak.
    assert measured["large_kib"] < 32 * 1024 + 2 * measured["large_input_kib"], measured
