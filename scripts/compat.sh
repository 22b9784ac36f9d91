#!/usr/bin/env bash
# Run the Spark-dependent tests on PySpark 3.5 (the Databricks LTS runtimes), in a second venv
# .venv-compat built by scripts/setup.sh with PySpark 3.5 pinned. Extra arguments go to pytest.
#
# Only the Spark tiers run here (-m "spark or cluster"): the engine and unit tests import no pyspark and
# already run under scripts/test.sh. Override the selection with your own -m, e.g. -m spark. About 20 minutes
# on two cores, the two local-cluster tests (~4 min) included.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-compat
# PySpark 3.5 and what it needs: its sql/connect extras want numpy<2 (pip installs 1.26), and pyarrow 26
# imports only with numpy 2. pandas 2.x works as it is.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
printf '%s\n' "pyspark>=3.5,<3.6" "pyarrow<26" >"$CONSTRAINTS"

# setup.sh installs sparkinfer's requirements under these constraints (PIP_CONSTRAINT) when it installs, and
# only checks otherwise; the check below repairs a venv that has another PySpark or a pyarrow that fails.
PIP_CONSTRAINT="$CONSTRAINTS" SPARKINFER_VENV="$VENV" bash scripts/setup.sh
if ! "$VENV/bin/python" -c 'import pyspark, pyarrow, sys; sys.exit(pyspark.__version__[:4] != "3.5.")' 2>/dev/null; then
    "$VENV/bin/python" -m pip --disable-pip-version-check -q install -c "$CONSTRAINTS" "pyspark>=3.5,<3.6" pyarrow
fi
"$VENV/bin/python" -c 'import pyspark, pandas, numpy, pyarrow as pa
print(f"compat: pyspark {pyspark.__version__}, pandas {pandas.__version__}, numpy {numpy.__version__}, pyarrow {pa.__version__}")'

exec "$VENV/bin/python" -m pytest -m "spark or cluster" "$@"
