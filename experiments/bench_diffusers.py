"""Do ddsm's sampler and the diffusers bridge give the same images for the same seeds and schedule?

The shipped supernet samples the same seeds with a mixed-width schedule (0.25
for the first half of the steps, 1.0 after) twice: with ``ddsm.samplers.generate``
and with a diffusers ``DDIMScheduler`` / ``DDPMScheduler`` loop through
``ddsm.integrations.diffusers.sample_with_diffusers``. ``max_abs_diff`` is the
largest pixel difference between the two (data range [-1, 1]); ``contrast`` is
the same measure between ddsm's images and ddsm's images under the reversed
schedule (1.0 first, then 0.25), i.e. the size of a real difference. Rows
with ``sides`` run the same widths with a resolution schedule (side 8 for the
first ``--low`` steps, growing to 16); their contrast is against the same
widths at 16 throughout.

    python experiments/bench_diffusers.py

Prints a table and writes experiments/results/diffusers_equivalence.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import torch

from ddsm import ResolutionWarning, SamplerConfig, Schedule, generate, load_supernet, make_sampler
from ddsm.diffusion import NoiseSchedule
from ddsm.integrations.diffusers import sample_with_diffusers
from ddsm.io import write_json

CASES = [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--num", type=int, default=64, help="seeds 0..num-1")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--low", type=int, default=12, help="steps at side 8 in the resolution rows")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = ap.parse_args(argv)

    start = time.perf_counter()
    net = load_supernet(args.checkpoint)
    half = args.steps // 2
    widths = [0.25] * half + [1.0] * (args.steps - half)
    seeds = list(range(args.num))
    full = net.config.unet.image_size
    sides = [full // 2] * args.low + [full] * (args.steps - args.low)
    rows = []
    for (kind, eta), res in [(c, None) for c in CASES] + [(c, sides) for c in CASES]:
        cfg = SamplerConfig(kind=kind, steps=args.steps, eta=eta)
        schedule = Schedule.for_model(net.config, cfg, widths, resolutions=res)
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResolutionWarning)  # training-free sides are fine for this check
            ours = generate(net.model, sampler, widths, seeds, resolutions=res)
            theirs = sample_with_diffusers(net, schedule, seeds)
        other = generate(net.model, sampler, list(reversed(widths)) if res is None else widths, seeds)
        rows.append({"sampler": kind, "eta": eta, "sides": "" if res is None else f"{full // 2} x {args.low}, then {full}",
                     "max_abs_diff": (ours - theirs).abs().max().item(),
                     "identical_pixels": (ours == theirs).float().mean().item(),
                     "contrast": (ours - other).abs().max().item()})

    print(f"{net.source} ({net.fingerprint}), {args.num} seeds, {args.steps} steps, widths "
          f"0.25 x {half} then 1.0 x {args.steps - half}, leading spacing, clip_sample")
    print(f"{'sampler':8} {'eta':>4} {'sides':>16} {'max abs diff':>13} {'identical':>10} {'contrast':>9}")
    for r in rows:
        print(f"{r['sampler']:8} {r['eta']:4.1f} {r['sides'] or 'all ' + str(full):>16} {r['max_abs_diff']:13.3e} "
              f"{r['identical_pixels']:10.1%} {r['contrast']:9.3f}")
    write_json(args.out / "diffusers_equivalence.json", {
        "settings": {"checkpoint": args.checkpoint, "fingerprint": net.fingerprint, "num": args.num,
                     "steps": args.steps, "widths": widths, "resolutions": sides},
        "versions": {"torch": torch.__version__, "diffusers": version("diffusers")},
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
