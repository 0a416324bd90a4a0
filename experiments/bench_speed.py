"""Does a schedule's FLOP saving become a time saving? The sampling path before and after, in one run.

For each batch size, DDIM with ``--steps`` steps on the shipped supernet samples
the same seeds with three plans: full width, the narrowest width throughout,
and a mixed schedule (the first ``--full-steps`` steps at full width, the rest
at the narrowest: 56 % of the MACs saved at the defaults). Each plan is timed
with the per-width weight cache off ("before": sliced weights re-made on every
call, as before the cache existed) and on ("after"), all six round-robin in one
process so machine load hits them alike; medians of ``--repeats`` rounds.
Samples of both paths are compared bit for bit.

Columns: ``time_share`` = plan time / full-width time of the same path;
``mac_share`` = plan MACs / full-width MACs (fvcore, ddsm's cost model);
``saving_ratio`` = time saving / MAC saving (1 means the time saving equals
the FLOP saving; below 0 means slower than full width).

    python experiments/bench_speed.py                     # batches 1, 16, 64, 256
    python experiments/bench_speed.py --batch 1 --batch 16 --repeats 3

Prints a table and writes experiments/results/speed.{json,csv} atomically.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ddsm import SamplerConfig, generate, load_supernet, make_sampler
from ddsm.cost import CostModel
from ddsm.diffusion import NoiseSchedule
from ddsm.io import write_atomic, write_json
from ddsm.nn.slimmable import weight_cache
from ddsm.plan import StepPlan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--batch", type=int, action="append", help="Batch size; repeatable [default: 1 16 64 256].")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--full-steps", type=int, default=8, help="Full-width steps of the mixed schedule.")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = args.batch or [1, 16, 64, 256]
    net = load_supernet(args.checkpoint, device="cpu")
    widths = net.config.unet.widths
    narrow, s = min(widths), args.steps
    plans = {"full width": StepPlan((1.0,) * s), f"width {narrow:g}": StepPlan((narrow,) * s),
             f"{args.full_steps} full then {narrow:g}": StepPlan((1.0,) * args.full_steps + (narrow,) * (s - args.full_steps))}
    macs = CostModel.count(net, widths)
    smp = make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind="ddim", steps=s))
    paths = {"before": False, "after": True}
    rows, identical = [], True
    load0 = os.getloadavg()
    for bs in batches:
        seeds = list(range(bs))
        runs = [(p, name) for p in paths for name in plans]
        times: dict[tuple, list[float]] = {r: [] for r in runs}
        outs: dict[tuple, torch.Tensor] = {}
        for rnd in range(args.repeats + 1):  # round 0 warms up (allocator, kernel choice, the cache itself)
            for j in range(len(runs)):
                p, name = runs[(j + rnd) % len(runs)]
                with weight_cache(paths[p]):
                    t0 = time.perf_counter()
                    x = generate(net.model, smp, plans[name].widths, seeds, batch_size=bs, progress=False)
                    dt = time.perf_counter() - t0
                if rnd:
                    times[(p, name)].append(dt)
                outs[(p, name)] = x
        for name in plans:
            identical &= torch.equal(outs[("before", name)], outs[("after", name)])
        for p in paths:
            full = statistics.median(times[(p, "full width")])
            for name, plan in plans.items():
                t = statistics.median(times[(p, name)])
                share = macs.share(plan)
                ts = t / full
                rows.append({"batch": bs, "path": p, "plan": name, "seconds": t, "time_share": ts, "mac_share": share,
                             "time_over_mac_share": ts / share,
                             "saving_ratio": (1 - ts) / (1 - share) if share < 1 else float("nan"),
                             "speedup_after": float("nan")})
        for name in plans:  # the same plan, before vs after: what the cache alone saves
            b = next(r for r in rows if r["batch"] == bs and r["path"] == "before" and r["plan"] == name)
            a = next(r for r in rows if r["batch"] == bs and r["path"] == "after" and r["plan"] == name)
            a["speedup_after"] = b["seconds"] / a["seconds"]
        print(f"batch {bs} done", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.float_format", "{:.3g}".format):
        print(df.to_string(index=False))
    print(f"samples before == after, bit for bit: {identical}; {args.threads} threads; DDIM {s}; medians of "
          f"{args.repeats}; load average {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out.with_suffix(".csv"), lambda p: df.to_csv(p, index=False))
    write_json(args.out.with_suffix(".json"), {"checkpoint": args.checkpoint, "steps": s, "threads": args.threads,
                                               "repeats": args.repeats, "identical": identical,
                                               "loadavg": [load0[0], os.getloadavg()[0]], "rows": rows})
    print(f"-> {args.out.with_suffix('.csv')}, {args.out.with_suffix('.json')}")
    return 0 if identical else 1


if __name__ == "__main__":
    from _script import run

    run(main)
