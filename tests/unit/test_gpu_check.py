"""scripts/gpu_check.py runs on the CPU, and on the GPU machine's layout: a model directory without weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.no_pyspark import run_without_pyspark

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_gpu_check_runs_from_tokenizer_files_only(tmp_path: Path, minilm_path: str) -> None:
    assets = tmp_path / "assets"
    subprocess.run([sys.executable, str(SCRIPT), "--save-assets", str(assets)], check=True, timeout=120)
    assert (assets / "tokenizer.json").is_file() and (assets / "config.json").is_file()
    assert not (assets / "model.safetensors").exists()

    # The GPU machine has no pyspark: the script runs here with pyspark blocked, and never imports it.
    argv = [str(SCRIPT), "--cpu-smoke", "--model", str(assets), "--rows", "6",
            "--only", "sorted-float32,fixed-float32,sorted-float32-no-overlap"]
    result = run_without_pyspark(
        f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["model"]["weights"].startswith("random")
    assert set(report["configs"]) == {"sorted-float32", "fixed-float32", "sorted-float32-no-overlap"}
    assert all(c["rows_per_s"] > 0 for c in report["configs"].values())
    # Same random model, same rows: every config computes the same vectors.
    assert all(c["min_cosine_vs_first"] >= 0.9999 for c in report["configs"].values())
    assert set(report["ratios"]) == {"sorted_over_fixed_float32", "overlap_on_over_off"}
