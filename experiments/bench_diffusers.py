"""Do ddsm's sampler and the diffusers bridge give the same images for the same seeds and schedule?

The shipped supernet samples the same seeds with a mixed-width schedule (0.25
for the first half of the steps, 1.0 after) twice: with ``ddsm.samplers.generate``
and with a diffusers ``DDIMScheduler`` / ``DDPMScheduler`` loop through
``ddsm.integrations.diffusers.sample_with_diffusers``. ``max_abs_diff`` is the
largest pixel difference between the two (data range [-1, 1]); ``contrast`` is
the same measure between ddsm's images and ddsm's images under the reversed
schedule (1.0 first, then 0.25), i.e. the size of a real difference.

    python experiments/bench_diffusers.py

Prints a table and writes experiments/results/diffusers_equivalence.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

from ddsm import SamplerConfig, Schedule, generate, load_supernet, make_sampler
from ddsm.diffusion import NoiseSchedule
from ddsm.integrations.diffusers import sample_with_diffusers
from ddsm.io import write_json

CASES = [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--num", type=int, default=64, help="seeds 0..num-1")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = ap.parse_args(argv)

    start = time.perf_counter()
    net = load_supernet(args.checkpoint)
    half = args.steps // 2
    widths = [0.25] * half + [1.0] * (args.steps - half)
    seeds = list(range(args.num))
    rows = []
    for kind, eta in CASES:
        cfg = SamplerConfig(kind=kind, steps=args.steps, eta=eta)
        schedule = Schedule.for_model(net.config, cfg, widths)
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), cfg)
        ours = generate(net.model, sampler, widths, seeds)
        theirs = sample_with_diffusers(net, schedule, seeds)
        reversed_ = generate(net.model, sampler, list(reversed(widths)), seeds)
        rows.append({"sampler": kind, "eta": eta, "max_abs_diff": (ours - theirs).abs().max().item(),
                     "identical_pixels": (ours == theirs).float().mean().item(),
                     "contrast": (ours - reversed_).abs().max().item()})

    print(f"{net.source} ({net.fingerprint}), {args.num} seeds, {args.steps} steps, widths "
          f"0.25 x {half} then 1.0 x {args.steps - half}, leading spacing, clip_sample")
    print(f"{'sampler':8} {'eta':>4} {'max abs diff':>13} {'identical':>10} {'contrast':>9}")
    for r in rows:
        print(f"{r['sampler']:8} {r['eta']:4.1f} {r['max_abs_diff']:13.3e} {r['identical_pixels']:10.1%} "
              f"{r['contrast']:9.3f}")
    write_json(args.out / "diffusers_equivalence.json", {
        "settings": {"checkpoint": args.checkpoint, "fingerprint": net.fingerprint, "num": args.num,
                     "steps": args.steps, "widths": widths},
        "versions": {"torch": torch.__version__, "diffusers": version("diffusers")},
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
