"""Does a search killed with SIGKILL mid-generation and resumed end exactly like an uninterrupted one?

Three runs of ``ddsm search`` (subprocesses, the real CLI and evaluator):

(a) the uninterrupted search, into ``<work>/full``;
(b) the same search into ``<work>/killed``, watched until it is inside
    generation ``--kill-generation`` (>= 1) *and* the evaluation log on disk
    already holds part of that generation; then, after a fixed ``--delay``,
    its whole process group gets SIGKILL (no handler, no flush, no cleanup);
(c) ``ddsm search --checkpoint ... --out <work>/killed --resume``.

It then compares ``front.csv`` byte for byte and the two evaluation logs on
the columns that must not depend on timing or placement (generation, genome,
widths, quality, valid, cost, share, constraint), exactly. It reports which
generation was killed, how many evaluations the log held at the kill (in all
and of that generation), and how many the resume computed and how many it
answered from the log.

    python experiments/search_kill_resume.py
    python experiments/search_kill_resume.py --space search_spaces/digits-smoke.yaml --checkpoint digits \\
        --work /tmp/kill-resume --delay 1

Writes ``<out>/search_kill_resume.json`` atomically; exits 1 if the fronts or
the logs differ. Three full searches: a few minutes on 2 free CPU cores for
the smoke space.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ddsm.io import read_json, read_parquet, write_json

# Everything in a log row but timing and placement (seconds, worker); the quality column goes in the middle.
EXACT = ["generation", "genome", "widths", "{quality}", "valid", "cost", "share", "constraint"]
SUMMARY = re.compile(r"\((\d+) this run, (\d+) from the log\)")


def ddsm_command() -> list[str]:
    """The ``ddsm`` entry point of this interpreter's environment (not whatever is first on PATH)."""
    exe = Path(sys.executable).with_name("ddsm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ddsm.cli"]


def search_command(args: argparse.Namespace, out: Path, *, resume: bool = False) -> list[str]:
    cmd = [*ddsm_command(), "search"]
    if not resume:  # a resume reads the space from the folder's space.json, as a user would
        cmd += ["--space", args.space]
    cmd += ["--checkpoint", args.checkpoint, "--out", str(out)]
    return cmd + (["--resume"] if resume else []) + ["--no-progress"]


def run(cmd: list[str], log: Path) -> tuple[float, str]:
    """Run a command to completion; its stdout+stderr go to ``log``. Returns (seconds, output)."""
    print(f"$ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    text = log.read_text()
    if rc != 0:
        sys.exit(f"command failed with exit code {rc}:\n{text}")
    return time.perf_counter() - t0, text


class Watch:
    """Reads a search folder's checkpoint and log only when the files change (they are replaced atomically)."""

    def __init__(self, folder: Path) -> None:
        self.state_path, self.log_path = folder / "state.json", folder / "evaluations.parquet"
        self._seen: dict[Path, float] = {}
        self.finished: int | None = None  # last finished generation per state.json
        self.log = pd.DataFrame(columns=["generation"])

    def _changed(self, path: Path) -> bool:
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        changed = self._seen.get(path) != mtime
        self._seen[path] = mtime
        return changed

    def poll(self) -> None:
        if self._changed(self.state_path):
            self.finished = int(read_json(self.state_path, "search checkpoint")["generation"])
        if self._changed(self.log_path):
            self.log = read_parquet(self.log_path)  # the search is live: one open pins one version

    def rows_of(self, generation: int) -> int:
        return int((self.log["generation"] == generation).sum())


def kill_mid_generation(args: argparse.Namespace, out: Path, log: Path) -> dict:
    cmd = search_command(args, out)
    print(f"$ {shlex.join(cmd)}   # killed with SIGKILL mid-generation", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        # Its own session, so the kill reaches every process it made and nothing of ours.
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    watch = Watch(out)
    try:
        # Mid-generation for certain: the checkpoint says the generation before is done, and the
        # log on disk already holds some of this one (the log is flushed a whole chunk at a time).
        while proc.poll() is None:
            watch.poll()
            if (watch.finished is not None and watch.finished + 1 >= args.kill_generation
                    and watch.rows_of(watch.finished + 1) > 0):
                break
            time.sleep(0.1)
        else:
            sys.exit(f"the search ended (exit code {proc.returncode}) before it could be killed:\n{log.read_text()}")
        time.sleep(args.delay)
        alive = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:  # any error above: do not leave it running
            os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    seconds = time.perf_counter() - t0
    if not alive or rc != -signal.SIGKILL:
        sys.exit(f"the search was not killed mid-run (alive at kill: {alive}, exit code {rc})")
    # What the resume will find: re-read both files as the kill left them.
    watch = Watch(out)
    watch.poll()
    generation = watch.finished + 1
    return {"killed_generation": generation, "last_finished_generation": watch.finished, "exit_code": rc,
            "log_rows_at_kill": len(watch.log), "killed_generation_rows_at_kill": watch.rows_of(generation),
            "seconds_until_kill": seconds}


def history(folder: Path, since: int) -> list[dict]:
    """Per-generation statistics from the checkpoint, for generations ``since`` and later."""
    return [h for h in read_json(folder / "state.json", "search checkpoint")["history"] if h["generation"] >= since]


def compared_columns(folder: Path) -> list[str]:
    quality = read_json(folder / "space.json", "search space")["objectives"]["quality"]
    return [quality if c == "{quality}" else c for c in EXACT]


def logs_identical(a: Path, b: Path) -> tuple[bool, str]:
    la, lb = pd.read_parquet(a / "evaluations.parquet"), pd.read_parquet(b / "evaluations.parquet")
    columns = compared_columns(a)
    try:
        pd.testing.assert_frame_equal(la[columns], lb[columns], check_exact=True)
    except AssertionError as e:
        return False, str(e).strip().splitlines()[0]
    return True, ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/digits-smoke.yaml")
    p.add_argument("--checkpoint", default="digits")
    p.add_argument("--out", default="experiments/results", help="where search_kill_resume.json goes")
    p.add_argument("--work", default=None, help="scratch folder for the three runs [default: a new temporary one]")
    p.add_argument("--kill-generation", type=int, default=1, help="kill inside this generation or a later one (>= 1)")
    p.add_argument("--delay", type=float, default=1.0,
                   help="seconds between seeing the generation half-logged and the kill (fixed: reproducible)")
    args = p.parse_args(argv)
    if args.kill_generation < 1:
        p.error("--kill-generation must be at least 1 (generation 0 follows the seeding, not a checkpoint)")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ddsm-kill-resume-"))
    full, killed = work / "full", work / "killed"
    for d in (full, killed):
        if d.exists():
            p.error(f"{d} already exists; give another --work (these runs must start from scratch)")
    work.mkdir(parents=True, exist_ok=True)

    full_seconds, _ = run(search_command(args, full), work / "full.log")
    kill = kill_mid_generation(args, killed, work / "killed.log")
    resume_cmd = search_command(args, killed, resume=True)
    resume_seconds, resume_out = run(resume_cmd, work / "resume.log")

    g = kill["killed_generation"]
    resumed, uninterrupted = history(killed, g), history(full, g)
    computed, reused = sum(h["evaluated"] for h in resumed), sum(h["cached"] for h in resumed)
    m = SUMMARY.search(resume_out)
    if m is None or (int(m[1]), int(m[2])) != (computed, reused):  # the CLI and the checkpoint must agree
        sys.exit(f"resume summary {m and m[0]!r} disagrees with the checkpoint ({computed} computed, {reused} reused)")
    # Of what the resume reused, this much came from the cut-short generation (the rest are repeats of
    # genomes from earlier generations, which the uninterrupted run answered from the log too).
    full_cached = sum(h["cached"] for h in uninterrupted)
    fronts_same = (full / "front.csv").read_bytes() == (killed / "front.csv").read_bytes()
    logs_same, log_diff = logs_identical(full, killed)
    rows = {"full": len(pd.read_parquet(full / "evaluations.parquet")),
            "resumed": len(pd.read_parquet(killed / "evaluations.parquet"))}

    result = {
        "space": args.space, "checkpoint": args.checkpoint, "work": str(work),
        "commands": {"full": shlex.join(search_command(args, full)), "killed": shlex.join(search_command(args, killed)),
                     "resume": shlex.join(resume_cmd)},
        "kill": {**kill, "delay": args.delay, "signal": "SIGKILL to the process group"},
        "resume": {"computed": computed, "reused": reused, "reused_from_killed_generation": reused - full_cached,
                   "per_generation": resumed, "seconds": resume_seconds},
        "full": {"seconds": full_seconds, "per_generation_from_killed": uninterrupted},
        "log_rows": rows,
        "compared_columns": compared_columns(full),
        "fronts_identical": fronts_same,
        "logs_identical": logs_same,
        "log_difference": log_diff,
    }
    out = Path(args.out) / "search_kill_resume.json"
    write_json(out, result)

    table = [
        ("killed in generation", g),
        ("last finished generation at kill", kill["last_finished_generation"]),
        ("exit code of killed run", kill["exit_code"]),
        ("evaluations in log at kill (all / killed gen)",
         f"{kill['log_rows_at_kill']} / {kill['killed_generation_rows_at_kill']}"),
        ("resume: computed / reused from log", f"{computed} / {reused}"),
        ("  reused from the killed generation", reused - full_cached),
        ("log rows: uninterrupted / killed+resumed", f"{rows['full']} / {rows['resumed']}"),
        ("front.csv identical (bytes)", "yes" if fronts_same else "NO"),
        (f"logs identical ({len(EXACT)} columns, exact)", "yes" if logs_same else f"NO ({log_diff})"),
        ("seconds: full / until kill / resume",
         f"{full_seconds:.1f} / {kill['seconds_until_kill']:.1f} / {resume_seconds:.1f}"),
    ]
    width = max(len(k) for k, _ in table)
    print()
    for k, v in table:
        print(f"{k:<{width}}  {v}")
    print(f"-> {out}")
    return 0 if fronts_same and logs_same else 1


if __name__ == "__main__":
    sys.exit(main())
