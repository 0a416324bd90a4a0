#!/usr/bin/env bash
# GPU check (issue 14 item 4): on a machine with one CUDA GPU, from a checkout, in under 8 minutes:
#   1. the CUDA-marked tests:   pytest -m cuda tests/test_cuda.py
#   2. the timings:             experiments/gpu_check.py -> $OUT/gpu_check.json
#                               (experiments/results/gpu_check.json when $OUT is unset)
#
#   bash experiments/gpu_check.sh            # extra arguments go to gpu_check.py (e.g. --only sampling)
#
# It installs nothing beyond the project's own install: if .venv is missing it is created exactly as
# README.md says (torch==2.13.0, then -e '.[test]' under .ci/constraints.txt), bounded by
# DDSM_GPU_CHECK_SETUP_TIMEOUT (default 900 s; network needed, not counted in the 8 minutes).
# The checks themselves run under one `timeout` of DDSM_GPU_CHECK_TIMEOUT seconds (default 470):
# the tests get at most PYTEST_TIMEOUT_S (default 200), gpu_check.py at most what is left minus 10 s
# (its sections also keep a soft budget, --budget-s, and write the JSON after each section).
# Every step is guarded: a failing step is recorded and the next one runs.
# Exit status: 0 all passed; 1 tests or a section failed; 3 no CUDA (or setup failed); 124 timed out.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${DDSM_GPU_CHECK_INNER:-}" ]; then
    if [ ! -x .venv/bin/python ]; then
        echo "[gpu_check] .venv missing: creating it as README.md says" >&2
        timeout -k 10 "${DDSM_GPU_CHECK_SETUP_TIMEOUT:-900}" bash -c \
            "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -c .ci/constraints.txt -e '.[test]'" \
            || { echo "[gpu_check] venv setup failed" >&2; exit 3; }
    fi
    export DDSM_GPU_CHECK_INNER=1 DDSM_GPU_CHECK_T0="$(date +%s)"
    timeout -k 10 "${DDSM_GPU_CHECK_TIMEOUT:-470}" bash "${BASH_SOURCE[0]}" "$@"
    rc=$?
    [ "$rc" -eq 124 ] && echo "[gpu_check] the whole check timed out after ${DDSM_GPU_CHECK_TIMEOUT:-470} s" >&2
    exit "$rc"
fi

PY=.venv/bin/python
TOTAL=${DDSM_GPU_CHECK_TIMEOUT:-470}
if [ -n "${OUT:-}" ]; then
    DIR=$OUT
else
    DIR=experiments/results
fi
mkdir -p "$DIR"
JSON=$DIR/gpu_check.json
LOG=$DIR/gpu_check_pytest.log

echo "[gpu_check] $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
"$PY" -c 'import torch; print("[gpu_check] torch", torch.__version__, "cuda available:", torch.cuda.is_available())' \
    || echo "[gpu_check] torch does not import" >&2

# 1. the CUDA tests (they skip themselves without CUDA; -m cuda replaces the default "-m 'not slow'")
timeout -k 5 "${PYTEST_TIMEOUT_S:-200}" "$PY" -m pytest -m cuda tests/test_cuda.py -v -rs -p no:cacheprovider \
    --junitxml "$DIR/gpu_check_pytest.xml" >"$LOG" 2>&1
pytest_rc=$?
tail -n 25 "$LOG"
echo "[gpu_check] pytest -m cuda exit status $pytest_rc (log: $LOG)"

# 2. the timings, with what is left of the budget
elapsed=$(( $(date +%s) - ${DDSM_GPU_CHECK_T0:-$(date +%s)} ))
left=$(( TOTAL - elapsed - 10 ))
[ "$left" -lt 30 ] && left=30
budget=$(( left - 40 ))   # soft budget of the sections; the rest is start-up and margin
[ "$budget" -lt 20 ] && budget=20
timeout -k 5 "$left" "$PY" experiments/gpu_check.py --out "$JSON" --budget-s "$budget" \
    --pytest-rc "$pytest_rc" --pytest-log "$LOG" "$@"
check_rc=$?
if [ "$check_rc" -eq 124 ] || [ "$check_rc" -eq 137 ]; then
    echo "[gpu_check] gpu_check.py timed out after $left s; $JSON holds the sections it finished" >&2
    timeout 20 "$PY" - "$JSON" <<'EOF' || true
import json, sys
from ddsm.io import write_json
p = sys.argv[1]
try:
    d = json.load(open(p))
except Exception:
    d = {"sections": {}}
d["status"] = "killed by timeout"
write_json(p, d)
EOF
fi
echo "[gpu_check] gpu_check.py exit status $check_rc; results: $JSON"

if [ "$check_rc" -eq 3 ]; then exit 3; fi
if [ "$pytest_rc" -ne 0 ] || [ "$check_rc" -ne 0 ]; then exit 1; fi
exit 0
