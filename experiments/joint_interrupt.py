"""Do Ctrl-C and SIGKILL in the middle of ``ddsm search-steps``, then ``--resume``, end like an uninterrupted run?

``ddsm search-steps`` runs one width search per model (the teacher, then each
distilled student, one after the other) under ``<out>/models/<name>/`` and
merges their fronts into ``<out>/front.json`` / ``front.csv``. Three runs of
the real CLI (subprocesses, ``--runner serial``, each in its own session) on a
tiny joint space written into ``--work`` (the shipped digits teacher and its
K = 2 and 4 students, four widths, two segments):

(a) uninterrupted, into ``<work>/full``;
(b) into ``<work>/int``, watched until the search of model ``--sigint-at``
    (``MODEL:GENERATION``, default ``k2:1``) has finished the generation before
    and logged part of that one; then, after ``--delay``, SIGINT (what Ctrl-C
    sends) to its process group: it must exit 130 with one "Continue with"
    line; then ``ddsm search-steps --out <work>/int --resume``;
(c) the same into ``<work>/kill`` with SIGKILL of the whole process group at
    ``--sigkill-at`` (default ``k4:1``; no handler, no flush), then resumed.

Both resumed folders are compared with (a): the joint ``front.csv`` byte for
byte, ``front.json`` and ``joint.json`` as documents (neither holds a timing
field); per model ``front.csv`` byte for byte, ``front.json``, the evaluation
log on every column but ``seconds`` and ``worker`` (exactly, row order
included) and ``state.json`` (the final NSGA-II population and generator
state exactly; its per-generation history on the timing- and cache-independent
fields); and the names of the files in every folder. It records which model and
generation each interruption hit, how much of the log was on disk, and how many
evaluations the resume computed and took from the log (from each model's
``state.json``: the CLI prints no per-run counts for ``search-steps``).

    python experiments/joint_interrupt.py
    python experiments/joint_interrupt.py --work /tmp/joint-interrupt --sigint-at teacher:1 --sigkill-at k2:1

Writes ``<out>/joint_interrupt.json`` atomically; exits 1 if anything differs.
Three joint searches and two resumes: about a minute on 2 idle CPU cores, up to four on busy ones.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from ddsm.io import read_json, read_parquet, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
# one search folder's watcher, the subprocess runner and the ddsm entry point: the single search's experiment's
from search_kill_resume import Watch, ddsm_command, run  # noqa: E402

# The base width space. Four widths over two segments give 16 schedules per model; population x generations
# stays under 16 so no student is searched exhaustively (one generation) and every model's search has a
# generation 1 to cut. A generation of 6 is two chunks of the default --chunk-size 4 (4 + 2), so a generation can
# be cut with part of it logged; 64 samples per candidate make that second chunk last long enough to land in.
BASE = {
    "widths": [0.25, 0.5, 0.75, 1.0],
    "sampler": {"kind": "ddim", "steps": 4},
    "segments": 2,
    "budget": 0.6,
    "objectives": {"quality": "proxy", "cost": "flops"},
    "population": 6,
    "generations": 2,
    "seed": 0,
    "seeding": {"uniform": True, "two_segment": [0.5], "n_random": 1, "sensitivity": False},
    "evaluator": {"num_samples": 64, "seed": 0, "batch_size": 8},
    "cache": {"flush_seconds": 0},  # every chunk reaches the disk at once (default: at most every 10 s)
}
TEACHER, STUDENTS = "digits", ["digits-sfddm-k2", "digits-sfddm-k4"]
TIMING = ["seconds", "worker"]  # the log columns that depend on timing and placement
# history fields of state.json that must not change; evaluated/cached (and the sharing shares) do by design
HISTORY_EXACT = ["generation", "best", "front", "hypervolume", "asked"]
POLL = 0.005  # seconds between looks at the watched folder: the window to land in is 0.1-0.5 s


def search_steps(out: Path, space: Path | None = None) -> list[str]:
    """A fresh joint search, or (no ``space``) the resume the CLI's "Continue with" line names."""
    if space is None:
        return [*ddsm_command(), "search-steps", "--out", str(out), "--resume", "--no-progress"]
    return [*ddsm_command(), "search-steps", "--space", str(space), "--out", str(out), "--runner", "serial",
            "--no-progress"]


def snapshot(out: Path, models: list[str]) -> dict[str, dict]:
    """Per model, what a folder holds: last finished generation, generations to run, log rows (in all, per gen)."""
    snap = {}
    for m in models:
        folder = out / "models" / m
        if not (folder / "space.json").is_file():
            snap[m] = {"started": False, "finished_generation": None, "rows": 0, "rows_per_generation": {}}
            continue
        watch = Watch(folder)
        watch.poll()
        per = watch.log["generation"].value_counts().sort_index()
        snap[m] = {"started": True, "finished_generation": watch.finished,
                   "generations": int(read_json(folder / "space.json", "search space")["generations"]),
                   "rows": len(watch.log), "rows_per_generation": {int(g): int(n) for g, n in per.items()}}
    return snap


def where_hit(at: dict[str, dict], full: dict[str, dict]) -> dict:
    """The first model whose search the interruption left unfinished, its cut generation, how much of it was logged."""
    for m, s in at.items():
        last = s["finished_generation"]
        if s["started"] and last is not None and last + 1 >= s["generations"]:
            continue  # this model's search had finished
        g = 0 if last is None else last + 1
        logged, whole = s["rows_per_generation"].get(g, 0), full[m]["rows_per_generation"].get(g, 0)
        return {"model": m, "generation": g, "generation_rows_logged": logged, "generation_rows_uninterrupted": whole,
                "mid_generation": 0 < logged < whole, "log_rows_of_model": s["rows"],
                "log_rows_all_models": sum(x["rows"] for x in at.values())}
    return {"model": None, "generation": None, "mid_generation": False,  # after every search, before or in the merge
            "log_rows_all_models": sum(x["rows"] for x in at.values())}


def interrupt(out: Path, space: Path, log: Path, sig: signal.Signals, model: str, generation: int, delay: float
              ) -> tuple[int, float, str]:
    """Start a joint search, send ``sig`` to its process group in ``model``'s ``generation``; (exit code, s, output)."""
    cmd = search_steps(out, space)
    print(f"$ {shlex.join(cmd)}   # {sig.name} in {model}'s generation {generation}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        # Its own session, so the signal reaches every process it made and nothing of ours.
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    watch, sent = Watch(out / "models" / model), False
    try:
        # Mid-generation for certain: the model's checkpoint says the generation before is done, and its log on
        # disk already holds some of this one (the log is written a whole chunk at a time).
        while proc.poll() is None:
            watch.poll()
            if watch.finished is not None and watch.finished + 1 >= generation and watch.rows_of(watch.finished + 1):
                break
            time.sleep(POLL)
        else:
            sys.exit(f"the joint search ended (exit code {proc.returncode}) before it could be interrupted:\n"
                     f"{log.read_text()}")
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            sent = True
        rc = proc.wait(timeout=300)  # a Ctrl-C'd search saves and exits; a hang is a finding, not a wait forever
    finally:
        if proc.poll() is None:  # any error above, or a hang after SIGINT: do not leave it running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not sent:
        sys.exit(f"the joint search ended (exit code {proc.returncode}) before the {sig.name}; try a smaller --delay")
    return rc, time.perf_counter() - t0, log.read_text()


def history(out: Path, model: str) -> dict[int, dict]:
    """A model's per-generation statistics from its checkpoint, by generation."""
    doc = read_json(out / "models" / model / "state.json", "search checkpoint")
    return {h["generation"]: h for h in doc["history"]}


def resumed_counts(out: Path, at: dict[str, dict], hit: dict) -> dict[str, dict]:
    """Per model: evaluations the resume computed (log rows added) and answered from the log (state.json history)."""
    models, counts = list(at), {}
    first = models.index(hit["model"]) if hit["model"] is not None else len(models)
    for i, m in enumerate(models):
        final = len(read_parquet(out / "models" / m / "evaluations.parquet"))
        # generations this resume ran: from the cut one in the hit model, all in the models after it
        since = hit["generation"] if i == first else (0 if i > first else None)
        ran = [h for g, h in history(out, m).items() if since is not None and g >= since]
        computed = final - at[m]["rows"]
        if computed != sum(h["evaluated"] for h in ran):  # the log and the checkpoint must agree
            sys.exit(f"{out}: model {m}: the resume added {computed} log rows, but its state.json counts "
                     f"{sum(h['evaluated'] for h in ran)} evaluations")
        counts[m] = {"computed": computed, "reused": sum(h["cached"] for h in ran),
                     "generations_run": [h["generation"] for h in ran]}
    return counts


# ---------------------------------------------------------------------------------------------------- comparing


def _first_line(e: AssertionError) -> str:
    return " ".join(str(e).split())[:300]


def same_bytes(a: Path, b: Path) -> dict:
    rows = max(len(a.read_text().splitlines()) - 1, 0)
    return {"how": "bytes", "compared": f"{rows} rows", "identical": a.read_bytes() == b.read_bytes()}


def same_doc(a: Path, b: Path, what: str, count: str | None = None) -> dict:
    da, db = read_json(a, what), read_json(b, what)
    n = f"{len(da.get(count) or [])} {count}" if count else f"{len(da)} keys"
    diff = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
    return {"how": "document", "compared": n, "identical": not diff, "difference": ", ".join(diff)}


def same_state(a: Path, b: Path) -> dict:
    """The final NSGA-II state exactly; the history on the fields that depend neither on timing nor on the cache."""
    da, db = (read_json(p, "search checkpoint") for p in (a, b))
    diff = sorted(k for k in set(da) | set(db) if k != "history" and da.get(k) != db.get(k))
    ha, hb = ([{k: h.get(k) for k in HISTORY_EXACT} for h in d["history"]] for d in (da, db))
    if ha != hb:
        diff.append("history")
    return {"how": f"document (history on {', '.join(HISTORY_EXACT)})",
            "compared": f"population of {len(da['pop']['X'])}, {len(ha)} generations", "identical": not diff,
            "difference": ", ".join(diff)}


def same_log(a: Path, b: Path) -> dict:
    la, lb = pd.read_parquet(a), pd.read_parquet(b)
    out = {"how": "frame, every column but " + ", ".join(TIMING), "compared": f"{len(la)} rows"}
    if list(la.columns) != list(lb.columns):
        return {**out, "identical": False, "difference": f"columns {list(la.columns)} / {list(lb.columns)}"}
    columns = [c for c in la.columns if c not in TIMING]
    out["columns"] = columns
    try:
        pd.testing.assert_frame_equal(la[columns], lb[columns], check_exact=True)
    except AssertionError as e:
        differ = ([] if len(la) != len(lb) else
                  [i for i in range(len(la)) if not la.loc[i, columns].equals(lb.loc[i, columns])])
        return {**out, "identical": False, "difference": _first_line(e), "differing_rows": differ,
                "rows_uninterrupted": la.loc[differ, columns].astype(str).to_dict(orient="records"),
                "rows_resumed": lb.loc[differ, columns].astype(str).to_dict(orient="records")}
    return {**out, "identical": True}


def file_names(folder: Path) -> set[str]:
    """A folder's files, but lock files (a killed run leaves its own) and temporaries of atomic writes."""
    return {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".ddsm.lock")
            and not p.name.endswith(".tmp")}


def compare(full: Path, other: Path, models: list[str]) -> dict[str, dict]:
    out = {"front.csv": same_bytes(full / "front.csv", other / "front.csv"),
           "front.json": same_doc(full / "front.json", other / "front.json", "joint front", "members"),
           "joint.json": same_doc(full / "joint.json", other / "joint.json", "joint search")}
    for m in models:
        a, b = full / "models" / m, other / "models" / m
        out[f"models/{m}/front.csv"] = same_bytes(a / "front.csv", b / "front.csv")
        out[f"models/{m}/front.json"] = same_doc(a / "front.json", b / "front.json", "search front", "members")
        out[f"models/{m}/evaluations.parquet"] = same_log(a / "evaluations.parquet", b / "evaluations.parquet")
        out[f"models/{m}/state.json"] = same_state(a / "state.json", b / "state.json")
    for folder in ["", *(f"models/{m}" for m in models)]:
        na, nb = file_names(full / folder), file_names(other / folder)
        out[f"{folder or '.'}/ (file names)"] = {"how": "names", "compared": f"{len(na)} files", "identical": na == nb,
                                                "difference": ", ".join(sorted(na ^ nb))}
    return out


def temporaries(folder: Path) -> list[str]:
    """Temporary files of atomic writes left behind (a SIGKILL between mkstemp and the rename leaves one)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


def summary(runs: dict[str, dict]) -> list[tuple[str, ...]]:
    """The printed table: one column per interruption, one row per fact and per compared file."""
    def row(label, f):
        return (label, *(str(f(r)) for r in runs.values()))

    def total(r, key):
        return sum(c[key] for c in r["resume"]["per_model"].values())

    table = [
        ("", *runs),
        row("interrupted in (model, generation)", lambda r: f"{r['hit']['model']} gen {r['hit']['generation']}"),
        row("  rows of that generation on disk / whole",
            lambda r: f"{r['hit'].get('generation_rows_logged')} / {r['hit'].get('generation_rows_uninterrupted')}"),
        row("  mid-generation", lambda r: "yes" if r["hit"]["mid_generation"] else "NO"),
        row("log rows on disk, all models", lambda r: r["hit"]["log_rows_all_models"]),
        row("exit code", lambda r: r["exit_code"]),
        row("one 'Continue with' line", lambda r: {True: "yes", False: "NO"}.get(r.get("continue_line_ok"), "-")),
        row("resume: computed / reused from log", lambda r: f"{total(r, 'computed')} / {total(r, 'reused')}"),
        row("  reused from the cut generation", lambda r: r["resume"].get("reused_from_cut_generation", "-")),
        row("seconds: until exit / resume", lambda r: f"{r['seconds_until_exit']:.1f} / {r['resume']['seconds']:.1f}"),
    ]
    first = next(iter(runs.values()))["files"]
    for name, f in first.items():
        table.append((f"{name} ({f['compared']})",
                      *("same" if r["files"][name]["identical"] else "DIFFERS" for r in runs.values())))
    return table


def at_spec(text: str) -> tuple[str, int]:
    model, _, gen = text.rpartition(":")
    if not model or not gen.isdigit() or int(gen) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODEL:GENERATION with GENERATION >= 1 (e.g. k2:1)")
    return model, int(gen)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=None, help="Scratch folder for the runs [default: a new temporary].")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                   help="Where joint_interrupt.json goes.")
    p.add_argument("--sigint-at", type=at_spec, default=("k2", 1), metavar="MODEL:GEN",
                   help="Ctrl-C inside this model's generation (>= 1: generation 0 has no checkpoint before it).")
    p.add_argument("--sigkill-at", type=at_spec, default=("k4", 1), metavar="MODEL:GEN",
                   help="SIGKILL inside this model's generation.")
    p.add_argument("--delay", type=float, default=0.0,
                   help="Seconds between seeing the generation partly logged and the signal (fixed: reproducible).")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ddsm-joint-interrupt-"))
    folders = {"full": work / "full", "SIGINT": work / "int", "SIGKILL": work / "kill"}
    for d in folders.values():
        if d.exists():
            p.error(f"{d} already exists; give another --work (these runs must start from scratch)")
    work.mkdir(parents=True, exist_ok=True)
    base, space = work / "base.yaml", work / "joint.yaml"
    base.write_text(yaml.safe_dump(BASE, sort_keys=False, default_flow_style=None))
    joint = {"base": str(base), "teacher": TEACHER, "students": STUDENTS}
    space.write_text(yaml.safe_dump(joint, sort_keys=False, default_flow_style=None))

    full = folders["full"]
    full_seconds, full_output = run(search_steps(full, space), work / "full.log")
    models = list(read_json(full / "joint.json", "joint search")["arms"])  # in the order they are searched
    full_snap = snapshot(full, models)
    for name, (model, gen) in (("--sigint-at", args.sigint_at), ("--sigkill-at", args.sigkill_at)):
        if model not in models or gen >= full_snap[model]["generations"]:
            p.error(f"{name} {model}:{gen}: the models are {', '.join(models)}, each with generations 0.."
                    f"{BASE['generations'] - 1} (an exhaustive student has only generation 0)")

    results = {"base_space": BASE, "joint_space": joint, "work": str(work), "delay": args.delay,
               "commands": {"full": shlex.join(search_steps(full, space))},
               "full": {"seconds": full_seconds, "output": full_output.strip().splitlines(),
                        "log_rows": {m: full_snap[m]["rows"] for m in models},
                        "rows_per_generation": {m: full_snap[m]["rows_per_generation"] for m in models}},
               "runs": {}}
    ok = True
    for sig, (model, gen) in ((signal.SIGINT, args.sigint_at), (signal.SIGKILL, args.sigkill_at)):
        out = folders[sig.name]
        rc, seconds, output = interrupt(out, space, work / f"{out.name}.log", sig, model, gen, args.delay)
        at = snapshot(out, models)
        hit = where_hit(at, full_snap)
        lines = [ln for ln in output.splitlines() if ln.strip()]
        info = {"signal": sig.name, "aimed_at": {"model": model, "generation": gen}, "hit": hit, "exit_code": rc,
                "seconds_until_exit": seconds, "output": lines, "temporaries_left": temporaries(out)}
        if sig == signal.SIGINT:
            # The CLI catches KeyboardInterrupt: exit 130 and one line naming the resume, no traceback.
            said = [ln for ln in lines if "Continue with" in ln]
            info["continue_line_ok"] = (rc == 130 and len(said) == 1 and not any("Traceback" in ln for ln in lines)
                                        and said[0].endswith(f"Continue with: ddsm search-steps --out {out} --resume"))
            ok &= info["continue_line_ok"]
        else:
            ok &= rc == -signal.SIGKILL
        resume_cmd = search_steps(out)
        resume_seconds, resume_output = run(resume_cmd, work / f"{out.name}-resume.log")
        info["commands"] = {"interrupted": shlex.join(search_steps(out, space)), "resume": shlex.join(resume_cmd)}
        info["resume"] = {"seconds": resume_seconds, "output": resume_output.strip().splitlines(),
                          "per_model": resumed_counts(out, at, hit)}
        if hit["model"] is not None:
            # Of what the resume took from the log in the cut generation, this much the interrupted run had
            # computed (the rest are repeats the uninterrupted run answered from the log too).
            g = hit["generation"]
            info["resume"]["reused_from_cut_generation"] = (history(out, hit["model"])[g]["cached"]
                                                            - history(full, hit["model"])[g]["cached"])
        info["files"] = compare(full, out, models)
        info["identical"] = all(f["identical"] for f in info["files"].values())
        ok &= info["identical"]
        results["runs"][sig.name] = info
    results["identical"] = ok
    path = args.out / "joint_interrupt.json"
    write_json(path, results)

    print(f"\nuninterrupted: {full_seconds:.1f} s, log rows {results['full']['log_rows']}")
    table = summary(results["runs"])
    width = max(len(t[0]) for t in table)
    for t in table:
        print(f"{t[0]:<{width}}  " + "  ".join(f"{c:<18}" for c in t[1:]))
    print(f"-> {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    from _script import run as run_main

    run_main(main)
