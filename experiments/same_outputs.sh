#!/usr/bin/env bash
# Run the commands whose outputs a restructuring must not change, with the ddsm found at SRC, into OUT:
# a width-and-resolution search with export and plots, a two-trial sweep, and the quickstart.
# Compare two such folders with: python experiments/compare_runs.py OUT_A OUT_B --alias SRC_A SRC_B
# usage: experiments/same_outputs.sh SRC OUT [PYTHON]   (PYTHON must not have another ddsm installed editable)
set -euo pipefail
SRC=$(cd "$1" && pwd); OUT=$2; PY=${3:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH=$SRC HF_HUB_OFFLINE=1
mkdir -p "$OUT"; cd "$OUT"
"$PY" -c "import ddsm; print('ddsm from', ddsm.__file__)"
t0=$SECONDS
"$PY" -m ddsm.cli search --space "$HERE/configs/search-progressive-small.yaml" --checkpoint digits-progressive \
  --out prog --no-progress
"$PY" -m ddsm.cli export prog --checkpoint digits-progressive --out prog-export --repeats 1 --warmup 0 --num 2 \
  --budget 0.6 --no-progress
"$PY" -m ddsm.cli plot prog --checkpoint digits-progressive --out prog-plots --num 4 --evaluate-missing
"$PY" -m ddsm.cli sweep --space "$SRC/search_spaces/digits-smoke.yaml" --budget 0.4 --budget 0.5 --checkpoint digits \
  --out sweep
"$PY" -m ddsm.cli quickstart --out qs --no-progress
echo "all: $((SECONDS - t0)) s"
