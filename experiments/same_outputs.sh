#!/usr/bin/env bash
# Run the commands whose outputs a restructuring must not change, with the ddsm found at SRC, into OUT:
# a width-and-resolution search with export and plots, a two-trial sweep, the quickstart, and short training,
# distillation and slimming runs (their checkpoints are compared tensor by tensor).
# Compare two such folders with: python experiments/compare_runs.py OUT_A OUT_B --alias SRC_A SRC_B
# usage: [PARTS='train search'] experiments/same_outputs.sh SRC OUT [PYTHON]
#   (PYTHON must not have another ddsm installed editable; PARTS picks the training runs and/or the rest)
set -euo pipefail
SRC=$(cd "$1" && pwd); OUT=$2; PY=${3:-python3}; PARTS=${PARTS:-train search}
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH=$SRC HF_HUB_OFFLINE=1
mkdir -p "$OUT"; cd "$OUT"
"$PY" -c "import ddsm; print('ddsm from', ddsm.__file__)"
t0=$SECONDS
if [[ " $PARTS " == *" train "* ]]; then
# Training runs: spectrum-aware and progressive-resolution training, an SFDDM distillation with the hidden-map
# term, and a slim run with channel reordering and the hidden-map term; a few steps each, every loss term on.
"$PY" -m ddsm.cli train --config "$HERE/configs/digits-spectral.yaml" --iters 3 --out train-spectral --no-progress
"$PY" -m ddsm.cli train --config "$HERE/configs/digits-progressive.yaml" --iters 3 --out train-progressive --no-progress
"$PY" -m ddsm.cli distill --teacher digits --steps 2 --sub-steps 2 --config "$HERE/configs/digits-sfddm.yaml" \
  --iters 3 --out distill --no-progress
"$PY" -m ddsm.cli slim --from-diffusers "$HERE/results/user-model" --config "$HERE/configs/slim-user-model.yaml" \
  --order importance --hidden-weight 1 --iters 3 --out slim --no-progress
fi
if [[ " $PARTS " == *" search "* ]]; then
"$PY" -m ddsm.cli search --space "$HERE/configs/search-progressive-small.yaml" --checkpoint digits-progressive \
  --out prog --no-progress
"$PY" -m ddsm.cli export prog --checkpoint digits-progressive --out prog-export --repeats 1 --warmup 0 --num 2 \
  --budget 0.6 --no-progress
"$PY" -m ddsm.cli plot prog --checkpoint digits-progressive --out prog-plots --num 4 --evaluate-missing
"$PY" -m ddsm.cli sweep --space "$SRC/search_spaces/digits-smoke.yaml" --budget 0.4 --budget 0.5 --checkpoint digits \
  --out sweep
"$PY" -m ddsm.cli quickstart --out qs --no-progress
fi
echo "all: $((SECONDS - t0)) s"
