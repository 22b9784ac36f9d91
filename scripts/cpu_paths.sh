#!/usr/bin/env bash
# Run the tests whose kernels depend on the CPU again, as on a CPU without AVX-512 (CI runs this after
# test.sh, so a green CI on either kind of machine means green on the other). Extra arguments go to pytest.
#
# - ATEN_CPU_CAPABILITY=avx2: torch dispatches its CPU kernels at AVX2, which also makes bitsandbytes skip
#   its torch._int_mm kernel for 8-bit matmuls (it registers that kernel only at AVX-512).
# - ONEDNN_MAX_CPU_ISA=AVX2: oneDNN stops at AVX2, so bfloat16 matmuls take torch's non-AVX-512-BF16 path.
# - SPARKINFER_FAULTS=cpu_4bit_path=reference: every 4-bit model takes bitsandbytes' dequantize-and-multiply
#   path, as on a CPU without AVX-512-BF16 (bitsandbytes reads the CPU itself, not the two settings above);
#   the tests that ask for the packed path skip themselves here (tests/quantized.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 SPARKINFER_FAULTS=cpu_4bit_path=reference
exec .venv/bin/python -m pytest \
    tests/unit/test_quantization.py tests/unit/test_generation.py tests/unit/test_placement.py \
    tests/spark/test_quantized_spark.py tests/notebooks/test_notebooks.py \
    -k "4bit or narrow or quantiz or bfloat16 or repack or test_03" "$@"
