"""Sampling time per width against its share of full-width MACs.

Every width samples the same seeds with DDIM; widths are timed round-robin in
one process (machine noise hits them alike) and the median of the repeats is
kept. ``time_share / mac_share`` above 1 means the width saves less time than
its MAC count promises (small widths under-use the device).

    python experiments/bench_sampling_speed.py --checkpoint digits

Prints a table and writes experiments/results/sampling_speed.{json,csv}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ddsm import SamplerConfig, generate, load_supernet, make_sampler
from ddsm.cost import count_macs
from ddsm.diffusion import NoiseSchedule
from ddsm.io import write_atomic, write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--num", type=int, default=64, help="samples per timed run (one batch)")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = ap.parse_args(argv)

    net = load_supernet(args.checkpoint, device=args.device)
    sampler = make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind="ddim", steps=args.steps))
    widths = net.config.unet.widths
    seeds = list(range(args.num))
    generate(net.model, sampler, widths[0], seeds[:4])  # warm-up (allocator, kernels)
    times: dict[float, list[float]] = {w: [] for w in widths}
    for _ in range(args.repeats):
        for w in widths:
            t0 = time.perf_counter()
            generate(net.model, sampler, w, seeds, batch_size=args.num)
            times[w].append(time.perf_counter() - t0)
    macs = {w: count_macs(net.model, w).total for w in widths}
    full_t, full_m = statistics.median(times[1.0]), macs[1.0]
    rows = [{"width": w, "macs": macs[w], "mac_share": macs[w] / full_m,
             "sample_s": statistics.median(times[w]), "time_share": statistics.median(times[w]) / full_t}
            for w in widths]
    df = pd.DataFrame(rows)
    df["time_share/mac_share"] = df["time_share"] / df["mac_share"]
    print(f"{args.num} samples, DDIM {args.steps} steps, batch {args.num}, {torch.get_num_threads()} threads, "
          f"{args.device}, median of {args.repeats}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "sampling_speed.json", {"settings": {k: str(v) for k, v in vars(args).items()},
                                                  "threads": torch.get_num_threads(),
                                                  "rows": df.to_dict(orient="records")})
    write_atomic(args.out / "sampling_speed.csv", lambda p: df.to_csv(p, index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
