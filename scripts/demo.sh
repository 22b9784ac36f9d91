#!/usr/bin/env bash
# Run the demo job end to end on built-in defaults (sets up .venv first). Arguments go to scripts/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
