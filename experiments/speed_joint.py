"""Wall-clock time of joint-front members (step count x width x cache) against the teacher's full width (issue 32).

A member of a joint front (``bench_sfddm.py --parts front``) may run another model with fewer steps, so its time
is measured against the teacher's full-width schedule, not its own model's: one ``generate`` call of each (the
member on its model and sampler; the teacher at full width with the base space's sampler), timed round-robin in
one process (median of ``--repeats`` rounds after one untimed round), at batch 1 and 64. Members are picked from
the benchmark's judged table (``sfddm.json``): the joint member closest to the teacher in FID, and the cheapest
joint member whose paired FID interval against the teacher contains 0.

    python experiments/speed_joint.py --bench runs/bench-sfddm-front-cache --repeats 10

Prints a table; writes ``<out>/sfddm-front-cache-speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from _script import run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default=str(ROOT / "runs" / "bench-sfddm-front-cache"),
                    help="bench_sfddm --parts front output folder (sfddm.json) and work folder (joint/)")
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds [10]")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="folder for the results")
    args = ap.parse_args()

    import torch

    from bench_cache import _round_robin
    from ddsm import load_supernet
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.io import read_json, write_json
    from ddsm.plan import StepPlan
    from ddsm.samplers import generate, make_sampler
    from ddsm.search.joint import load_joint, member_plan, prepare_joint

    bench = Path(args.bench)
    doc = read_json(bench / "sfddm.json", "benchmark results")
    rows = [r for r in doc["front"]["members"] if r["front"] == "joint"]
    closest = min(rows, key=lambda r: abs(r["fid_minus_teacher20"]))
    inside = [r for r in rows if r["low"] <= 0 <= r["high"]]
    picks = {"closest to the teacher in FID": closest}
    if inside:
        picks["cheapest with 0 in its FID interval"] = min(inside, key=lambda r: r["share"])
    run_ = load_joint(bench / "joint")
    arms = {a.name: a for a in prepare_joint(run_.joint)}  # each model's supernet and its own sampler
    front = run_.front.to_dict(orient="records")
    teacher = load_supernet(run_.joint.teacher)
    base = run_.joint.base_space()
    full = StepPlan((1.0,) * base.sampler.calls)
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": torch.get_num_threads(),
           "repeats": args.repeats, "members": {}}
    for why, r in picks.items():
        m = next(m for m in front if m["model"] == r["model"]
                 and " ".join(f"{w:g}" for w in m["widths"]) == r["widths"]
                 and member_plan(m).cached_steps == r["cached_steps"])
        net = arms[m["model"]].net
        plan = member_plan(m)
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), arms[m["model"]].space.sampler)
        t_sampler = make_sampler(NoiseSchedule(teacher.config.diffusion), base.sampler)
        res = {"model": r["model"], "widths": r["widths"], "cached_steps": r["cached_steps"], "mac_share": r["share"],
               "fid_minus_teacher20": [r["fid_minus_teacher20"], r["low"], r["high"]], "batches": {}}
        for b in (1, 64):
            seeds = list(range(10_000, 10_000 + b))
            calls = {"member": lambda: generate(net.model, sampler, plan, seeds),
                     "teacher": lambda: generate(teacher.model, t_sampler, full, seeds)}
            t0 = time.perf_counter()
            sec = _round_robin(calls, args.repeats)
            wall = 1 - sec["member"] / sec["teacher"]
            res["batches"][str(b)] = {"seconds": sec["member"], "teacher_seconds": sec["teacher"], "wall_saving": wall,
                                      "flop_saving": 1 - r["share"], "wall_over_flop_saving": wall / (1 - r["share"]),
                                      "timing_seconds": round(time.perf_counter() - t0, 1)}
            print(f"{why}: {r['model']} share {r['share']:.3f}, batch {b:>2}: {sec['member']:.3f} s vs "
                  f"{sec['teacher']:.3f} s; wall saving {wall:.1%}, FLOP saving {1 - r['share']:.1%}, "
                  f"ratio {wall / (1 - r['share']):.2f}", flush=True)
        out["members"][why] = res
    write_json(Path(args.out) / "sfddm-front-cache-speed.json", out)
    print(f"wrote {Path(args.out) / 'sfddm-front-cache-speed.json'}")
    return 0


if __name__ == "__main__":
    run(main)
