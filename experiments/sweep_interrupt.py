"""Does a sweep survive interruption? 2 budgets x 2 seeds, once straight through, once killed and resumed.

Runs ``ddsm sweep`` on ``--space`` (default: the smoke search) with budgets
0.4 and 0.5 and seeds 0 and 1 into ``work/straight``; then the same sweep
into ``work/killed``, killed with SIGKILL (the driver and every Ray process
it started) once ``--after`` trials have finished and others are running,
then ``ddsm sweep ... --resume``. Every trial's ``front.csv`` and evaluation
log must equal the uninterrupted sweep's.

    python experiments/sweep_interrupt.py

Prints a table and writes ``<out>/sweep_interrupt.json`` atomically.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ddsm.io import write_json

EXACT = ["generation", "genome", "widths", "proxy", "valid", "cost", "share", "constraint"]


def sweep_cmd(space: str, checkpoint: str, out: Path, *extra: str) -> list[str]:
    ddsm = str(Path(sys.executable).with_name("ddsm"))
    return [ddsm, "sweep", "--space", space, "--budget", "0.4", "--budget", "0.5", "--seed", "0", "--seed", "1",
            "--checkpoint", checkpoint, "--out", str(out), *extra]


def finished_trials(out: Path, generations: int) -> int:
    """Trials whose search has finished every generation (read from their checkpoints)."""
    import json

    n = 0
    for state in (out / "runs").glob("*/state.json"):
        try:
            n += json.loads(state.read_text())["generation"] + 1 >= generations
        except (OSError, ValueError, KeyError):
            pass  # being written: not finished for us
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="search_spaces/digits-smoke.yaml")
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--after", type=int, default=1, help="kill once this many trials have finished")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default="experiments/results")
    args = ap.parse_args(argv)
    from ddsm.search import SearchConfig

    generations = SearchConfig.load(args.space).generations
    work = Path(args.work or tempfile.mkdtemp(prefix="ddsm-sweep-interrupt-"))
    env = dict(os.environ)  # ddsm's local Ray keeps Ray's token authentication on
    straight, killed = work / "straight", work / "killed"

    t0 = time.perf_counter()
    subprocess.run(sweep_cmd(args.space, args.checkpoint, straight), env=env, check=True, stdout=subprocess.DEVNULL)
    straight_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    # A session of its own, so the kill reaches Ray's raylet and workers too, as a crash would.
    proc = subprocess.Popen(sweep_cmd(args.space, args.checkpoint, killed), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while finished_trials(killed, generations) < args.after and proc.poll() is None:
        time.sleep(0.5)
    done_at_kill = finished_trials(killed, generations)
    os.killpg(proc.pid, signal.SIGKILL)
    code = proc.wait()
    kill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(sweep_cmd(args.space, args.checkpoint, killed, "--resume"), env=env, check=True,
                   stdout=subprocess.DEVNULL)
    resume_s = time.perf_counter() - t0

    a, b = pd.read_csv(straight / "results.csv"), pd.read_csv(killed / "results.csv")
    rows = []
    for trial in a["trial"]:
        fa, fb = (x / "runs" / trial / "front.csv" for x in (straight, killed))
        la, lb = (pd.read_parquet(x / "runs" / trial / "evaluations.parquet") for x in (straight, killed))
        rows.append({"trial": trial, "front_identical": fa.read_bytes() == fb.read_bytes(),
                     "log_identical": la[EXACT].equals(lb[EXACT]), "evaluations": len(la)})
    table = pd.DataFrame(rows)
    summary = {"space": args.space, "work": str(work), "trials": len(table),
               "kill": {"exit_code": code, "trials_finished_at_kill": done_at_kill, "seconds_until_kill": kill_s},
               "seconds": {"straight": straight_s, "resume": resume_s},
               "all_identical": bool(table["front_identical"].all() and table["log_identical"].all()),
               "results_table_identical": a.drop(columns=["run"]).equals(b.drop(columns=["run"])),
               "per_trial": table.to_dict(orient="records"),
               "commands": [" ".join(sweep_cmd(args.space, args.checkpoint, straight)),
                            " ".join(sweep_cmd(args.space, args.checkpoint, killed)) + "   # SIGKILL mid-sweep",
                            " ".join(sweep_cmd(args.space, args.checkpoint, killed, "--resume"))]}
    print(table.to_string(index=False))
    print(pd.Series({k: v for k, v in summary.items() if k not in ("per_trial", "commands")}).to_string())
    write_json(Path(args.out) / "sweep_interrupt.json", summary)
    return 0 if summary["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
