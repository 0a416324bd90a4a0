"""The user's scheduler, reproduced (issue 31): each diffusers scheduler class read from a folder into ddsm's sampler,
against that scheduler itself, on the shipped digits supernet.

For every supported class and spacing, a scheduler config is saved by diffusers in a temporary folder (with the
supernet's betas), read back as a search space would (``sampler: {scheduler: FOLDER, steps: N}``), and sampled by
ddsm's loop (the one search, export and verdict run); the same folder's scheduler object runs diffusers' own loop
(``ddsm.integrations.schedulers.sample_with_scheduler``). Both take the same width per model call (a seeded draw
from the supernet's widths) and the same seeds. The table gives the ddsm kind, the model calls and the largest
absolute difference of the samples in [-1, 1] units (and relative to the samples' largest magnitude, for grids
that start at T - 1 of the cosine schedule, where alpha_bar ~ 2e-9 and both loops diverge); stochastic classes (DDPM, Euler-ancestral) draw the same
per-sample noise in both.

    python experiments/bench_schedulers.py --num 64 --steps 4,10

Prints the table; writes ``<out>/schedulers.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from _script import run  # noqa: E402

CASES = [  # (class, options): each class at its default spacing, and at 'leading' where that differs
    ("DDPMScheduler", {}), ("DDIMScheduler", {}), ("DDIMScheduler", {"steps_offset": 1}),
    ("DPMSolverMultistepScheduler", {}), ("DPMSolverMultistepScheduler", {"timestep_spacing": "leading"}),
    ("UniPCMultistepScheduler", {}), ("UniPCMultistepScheduler", {"timestep_spacing": "leading"}),
    ("EulerDiscreteScheduler", {"timestep_spacing": "leading"}),
    ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "leading"}),
    ("HeunDiscreteScheduler", {"timestep_spacing": "leading"}), ("HeunDiscreteScheduler", {"timestep_spacing": "trailing"}),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="digits", help="supernet [digits]")
    ap.add_argument("--steps", default="4,10", help="comma-separated step counts [4,10]")
    ap.add_argument("--num", type=int, default=64, help="samples per case [64]")
    ap.add_argument("--seed", type=int, default=0, help="first seed, and the seed of the width draws [0]")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="folder for schedulers.json")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    from ddsm import load_supernet
    from ddsm.config import validate
    from ddsm.diffusion import NoiseSchedule
    from ddsm.diffusion.noise import make_betas
    from ddsm.errors import DDSMError
    from ddsm.integrations.diffusers import import_diffusers
    from ddsm.integrations.schedulers import make_scheduler, model_calls, sample_with_scheduler
    from ddsm.io import write_json
    from ddsm.samplers import SamplerConfig, generate, make_sampler

    diffusers = import_diffusers()
    net = load_supernet(args.checkpoint)
    diff = net.config.diffusion
    rng = np.random.default_rng(args.seed)
    seeds = list(range(args.seed, args.seed + args.num))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cls, options in CASES:
            folder = Path(tmp) / f"{cls}-{len(rows)}"
            getattr(diffusers, cls)(num_train_timesteps=diff.num_timesteps, trained_betas=make_betas(diff).tolist(),
                                    prediction_type=diff.prediction_type, **options).save_config(folder / "scheduler")
            for steps in [int(s) for s in args.steps.split(",")]:
                try:
                    config = validate(SamplerConfig, {"scheduler": str(folder), "steps": steps})
                except DDSMError as e:
                    rows.append({"class": cls, "options": str(options), "steps": steps, "refused": str(e)})
                    continue
                theirs_scheduler = make_scheduler(net, str(folder), steps)
                widths = [float(w) for w in rng.choice(net.config.geometry.widths, size=model_calls(theirs_scheduler))]
                t0 = time.perf_counter()
                ours = generate(net.model, make_sampler(NoiseSchedule(diff), config), widths, seeds)
                t1 = time.perf_counter()
                theirs = sample_with_scheduler(net, theirs_scheduler, widths, seeds)
                t2 = time.perf_counter()
                rows.append({"class": cls, "options": str(options), "steps": steps, "ddsm_kind": config.kind,
                             "eta": config.eta, "explicit_grid": config.timesteps is not None,
                             "model_calls": config.calls, "diffusers_calls": model_calls(theirs_scheduler),
                             "max_abs_diff": float((ours - theirs).abs().max()),
                             # a grid that starts at T - 1 on a cosine schedule (alpha_bar ~ 2e-9 there) diverges in
                             # both loops: the difference is then read against the samples' own size
                             "max_abs_sample": float(theirs.abs().max()),
                             "relative_diff": float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1.0)),
                             "ddsm_seconds": round(t1 - t0, 3), "diffusers_seconds": round(t2 - t1, 3)})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.drop(columns=["ddsm_seconds", "diffusers_seconds", "eta"], errors="ignore").to_string(index=False))
    out = Path(args.out)
    write_json(out / "schedulers.json", {
        "what": "diffusers schedulers read from a folder into ddsm's sampler, against the scheduler itself (issue 31)",
        "command": "python experiments/bench_schedulers.py " + " ".join(sys.argv[1:]),
        "checkpoint": args.checkpoint, "num": args.num, "seeds": [seeds[0], seeds[-1] + 1],
        "torch": torch.__version__, "diffusers": diffusers.__version__, "rows": rows})
    print(f"wrote {out / 'schedulers.json'}")
    return 0


if __name__ == "__main__":
    run(main)
