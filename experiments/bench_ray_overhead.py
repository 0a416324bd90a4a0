"""What Ray costs a search: one serial evaluator against one Ray actor on the same cores and candidates.

In ONE process, on the shipped 'digits' supernet with a digits-smoke-like space
(``search_spaces/digits-smoke.yaml``: DDIM 20 steps, 5 genes, proxy quality,
32 samples per candidate, chunks of 4 as the search cuts them; the trajectory
cache off so every round does the same work):

(a) the serial runner, torch at ``--threads`` threads in this process;
(b) a Ray runner with one actor (``RayRunner(workers=1, num_cpus=--threads)``:
    the actor gets ``--threads`` CPUs and sets ``torch.set_num_threads`` to that);
(c) the fixed start-up of each, timed apart from steady state: for Ray,
    ``ray.init`` + actor creation + the actor's evaluator build (supernet load),
    then the first call (the proxy's teacher samples); for serial, the
    evaluator build and the same first call.

Steady state: ``--rounds`` rounds, each scores the same ``--candidates``
genomes with both runners, serial and Ray alternating (S R, R S, S R, ...) so
load from other jobs on a shared machine hits both alike. Per round: wall
seconds, evaluations per second, the seconds spent inside ``evaluate`` (the
evaluator's own time, summed from the rows) and the rest (dispatch, pickling,
waiting). Reported: medians over rounds of evaluations per second, the ratio
Ray/serial, and the overhead per evaluation (Ray wall - serial wall) / N of
the paired rounds. ``os.getloadavg()`` is recorded at start and end.

    .venv/bin/python experiments/bench_ray_overhead.py

Prints a table; writes experiments/results/ray_overhead.{json,csv} atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from ddsm.io import write_atomic, write_json
from ddsm.search import SearchConfig
from ddsm.search.setup import SupernetEvaluatorFactory, evaluator_factory

SPACE = "digits-smoke"  # the shipped search_spaces/digits-smoke.yaml


def bench_space(*, num_samples: int | None = None, fuse: bool | None = None, steps: int | None = None) -> SearchConfig:
    """The digits-smoke space with the trajectory cache off (rounds repeat the same work) and optional overrides."""
    space = SearchConfig.load(SPACE)
    ev = {"trajectory_cache_mb": 0.0}
    if num_samples is not None:
        ev["num_samples"] = num_samples
    if fuse is not None:
        ev["fuse"] = fuse
    update: dict[str, Any] = {"evaluator": space.evaluator.model_copy(update=ev)}
    if steps is not None:
        update["sampler"] = space.sampler.model_copy(update={"steps": steps})
    return space.model_copy(update=update)


def bench_factory(space: SearchConfig, checkpoint: str = "digits") -> SupernetEvaluatorFactory:
    return evaluator_factory(space, checkpoint)


def teacher_genome(space: SearchConfig) -> tuple[int, ...]:
    """The full-width genome: the proxy's teacher (its first call samples the teacher)."""
    return (len(space.widths) - 1,) * space.n_genes


def candidate_genomes(space: SearchConfig, n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``n`` distinct random width genomes, none of them the teacher (whose score is free)."""
    rng = random.Random(seed)
    full, out = teacher_genome(space), []
    if space.resolutions is not None:
        raise SystemExit("a width-only space is expected")
    while len(out) < n:
        g = tuple(rng.randrange(len(space.widths)) for _ in range(space.n_genes))
        if g != full and g not in out:
            out.append(g)
    return out


def timed_round(runner, genomes: Sequence[tuple[int, ...]], quality: str) -> dict:
    """Score ``genomes`` once: wall seconds, evaluations/s, evaluator seconds (sum of the rows) and the rest."""
    t0 = time.perf_counter()
    rows = runner(genomes)
    wall = time.perf_counter() - t0
    inside = sum(float(r["seconds"]) for r in rows)
    return {"wall_s": wall, "evals_per_s": len(rows) / wall, "evaluator_s": inside, "outside_s": wall - inside,
            "n": len(rows), "valid": sum(bool(r["valid"]) for r in rows),
            "quality": [float(r[quality]) for r in rows], "worker": rows[0]["worker"] if rows else None}


def serial_startup(factory, space: SearchConfig, device: str) -> tuple[Any, dict]:
    """A SerialRunner with its evaluator built and its first call (the teacher) done; the two times apart."""
    from ddsm.search import SerialRunner

    runner = SerialRunner(factory, decode=space.decode, quality=factory.quality, chunk_size=4, device=device)
    t0 = time.perf_counter()
    _ = runner.evaluator
    t1 = time.perf_counter()
    runner([teacher_genome(space)])
    t2 = time.perf_counter()
    return runner, {"build_s": t1 - t0, "first_call_s": t2 - t1, "total_s": t2 - t0}


def ray_startup(factory, space: SearchConfig, *, num_cpus: int, gpus_per_worker: float | None = None,
                num_gpus: int | None = None) -> tuple[Any, dict]:
    """A one-actor RayRunner, timed: init + actor creation + evaluator build (the actor's __init__), first call."""
    from ddsm.search.ray_runner import RayRunner

    import ray  # imported before the clock starts: importing is not start-up of a session

    t0 = time.perf_counter()
    runner = RayRunner(factory, decode=space.decode, quality=factory.quality, chunk_size=4, workers=1,
                       num_cpus=num_cpus, num_gpus=num_gpus, gpus_per_worker=gpus_per_worker)
    t1 = time.perf_counter()  # ray.init done, actor requested (creation is asynchronous)
    info = runner.info()  # returns once the actor's __init__ (device, threads, evaluator build) has run
    t2 = time.perf_counter()
    runner([teacher_genome(space)])
    t3 = time.perf_counter()
    assert ray.is_initialized()
    return runner, {"init_and_request_s": t1 - t0, "actor_ready_s": t2 - t1, "first_call_s": t3 - t2,
                    "total_s": t3 - t0, "actor": info[0]}


def summarise(rounds: list[dict], n: int) -> dict:
    """Medians over rounds per runner, the Ray/serial ratio and the overhead per evaluation of paired rounds."""
    by = {k: [r for r in rounds if r["runner"] == k] for k in ("serial", "ray")}
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "evals_per_s", "evaluator_s", "outside_s")}
           for k, v in by.items()}
    paired = [(r["wall_s"] - s["wall_s"]) / n for s, r in zip(by["serial"], by["ray"])]
    ratios = [r["evals_per_s"] / s["evals_per_s"] for s, r in zip(by["serial"], by["ray"])]
    return {"median": med, "ratio_ray_over_serial_evals_per_s": med["ray"]["evals_per_s"] / med["serial"]["evals_per_s"],
            "ratio_paired": ratios, "ratio_paired_median": statistics.median(ratios),
            "overhead_per_eval_s_paired": paired, "overhead_per_eval_s_median": statistics.median(paired),
            "ray_outside_evaluator_per_eval_s_median": med["ray"]["outside_s"] / n,
            # the least-disturbed round of each (robust to other jobs' load spikes on a shared machine)
            "min_wall_s": {k: min(r["wall_s"] for r in v) for k, v in by.items()},
            "ratio_of_best_rounds": min(r["wall_s"] for r in by["serial"]) / min(r["wall_s"] for r in by["ray"]),
            "overhead_per_eval_s_best_rounds": (min(r["wall_s"] for r in by["ray"])
                                                - min(r["wall_s"] for r in by["serial"])) / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--candidates", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5, help="alternating serial/Ray rounds")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the serial runner = CPUs of the actor")
    ap.add_argument("--num-samples", type=int, default=None, help="samples per candidate (default: the space's, 32)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random candidate genomes")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = ap.parse_args(argv)

    load_start = os.getloadavg()
    started = time.time()
    torch.set_num_threads(args.threads)
    space = bench_space(num_samples=args.num_samples)
    factory = bench_factory(space, args.checkpoint)
    genomes = candidate_genomes(space, args.candidates, args.seed)

    serial, s_start = serial_startup(factory, space, "cpu")
    ray_runner, r_start = ray_startup(factory, space, num_cpus=args.threads)
    rounds: list[dict] = []
    try:
        for i in range(args.rounds):
            order = ("serial", "ray") if i % 2 == 0 else ("ray", "serial")
            for kind in order:
                res = timed_round(serial if kind == "serial" else ray_runner, genomes, factory.quality)
                rounds.append({"round": i, "runner": kind, **res, "loadavg_1m": os.getloadavg()[0]})
                print(f"round {i} {kind:6s} {res['wall_s']:7.2f} s  {res['evals_per_s']:.3f} evals/s", flush=True)
    finally:
        ray_runner.close()
    load_end = os.getloadavg()
    same = all(a == b for a, b in zip(rounds[0]["quality"], next(r for r in rounds if r["runner"] == "ray")["quality"]))
    summary = summarise(rounds, len(genomes))

    med = summary["median"]
    table = pd.DataFrame([
        {"runner": "serial", "threads": args.threads, "startup_s": s_start["total_s"],
         "wall_s": med["serial"]["wall_s"], "evals_per_s": med["serial"]["evals_per_s"],
         "evaluator_s": med["serial"]["evaluator_s"], "outside_s": med["serial"]["outside_s"]},
        {"runner": "ray(1 actor)", "threads": r_start["actor"]["threads"], "startup_s": r_start["total_s"],
         "wall_s": med["ray"]["wall_s"], "evals_per_s": med["ray"]["evals_per_s"],
         "evaluator_s": med["ray"]["evaluator_s"], "outside_s": med["ray"]["outside_s"]},
    ])
    print(f"\n{len(genomes)} candidates (chunks of 4, {space.evaluator.num_samples} samples, DDIM "
          f"{space.sampler.steps} steps, proxy, fuse={space.evaluator.fuse}, cache off), median of {args.rounds} "
          f"alternating rounds, {os.cpu_count()} cores, loadavg {load_start[0]:.2f} -> {load_end[0]:.2f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"Ray start-up: init+actor request {r_start['init_and_request_s']:.2f} s, actor ready (evaluator built) "
          f"{r_start['actor_ready_s']:.2f} s, first call (teacher) {r_start['first_call_s']:.2f} s; serial: build "
          f"{s_start['build_s']:.2f} s, first call {s_start['first_call_s']:.2f} s")
    print(f"Ray/serial evals/s: {summary['ratio_ray_over_serial_evals_per_s']:.3f} (ratio of medians), "
          f"{summary['ratio_paired_median']:.3f} (median of per-round ratios "
          f"{', '.join(f'{x:.3f}' for x in summary['ratio_paired'])}); overhead per evaluation "
          f"(paired rounds, median) {summary['overhead_per_eval_s_median'] * 1000:+.1f} ms (per round "
          f"{', '.join(f'{x * 1000:+.1f}' for x in summary['overhead_per_eval_s_paired'])}); Ray wall outside the "
          f"evaluator {summary['ray_outside_evaluator_per_eval_s_median'] * 1000:.1f} ms per evaluation; "
          f"same scores serial vs Ray: {same}")
    print(f"best rounds: serial {summary['min_wall_s']['serial']:.2f} s, Ray {summary['min_wall_s']['ray']:.2f} s: "
          f"Ray/serial evals/s {summary['ratio_of_best_rounds']:.3f}, overhead "
          f"{summary['overhead_per_eval_s_best_rounds'] * 1000:+.1f} ms per evaluation")

    doc = {"command": " ".join([sys.executable, *sys.argv]), "settings": {k: str(v) for k, v in vars(args).items()},
           "space": SPACE, "evaluator": space.evaluator.model_dump(), "sampler": space.sampler.model_dump(),
           "genomes": [list(g) for g in genomes], "torch": torch.__version__, "python": platform.python_version(),
           "cores": os.cpu_count(), "loadavg_start": list(load_start), "loadavg_end": list(load_end),
           "started_unix": started, "wall_total_s": time.time() - started,
           "startup": {"serial": s_start, "ray": r_start,
                       "ray_extra_fixed_s": r_start["total_s"] - s_start["total_s"]},
           "rounds": [{k: v for k, v in r.items() if k != "quality"} for r in rounds],
           "same_scores_serial_vs_ray": same, "summary": summary, "table": table.to_dict(orient="records")}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "ray_overhead.json", doc)
    csv = pd.DataFrame([{k: v for k, v in r.items() if k != "quality"} for r in rounds])
    write_atomic(args.out / "ray_overhead.csv", lambda p: csv.to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
