"""Hashes of unconditional sampling outputs, to show a change leaves them bit-identical.

For the shipped ``digits``, ``digits-progressive`` and ``digits-spectral`` supernets, DDIM (eta 0) and
DDPM, three mixed-width plans on 12 seeds: ``generate`` per plan, ``generate_many`` unfused then fused
sharing one trajectory cache (seed batches of 5), and one resolution plan. One thread, so the float
rounding is the same on every run of one machine. Run it with two source trees and compare the files:

    PYTHONPATH=/path/to/old python experiments/sampling_hashes.py old.json
    PYTHONPATH=. python experiments/sampling_hashes.py new.json && cmp old.json new.json

Writes the JSON file named on the command line (sha256 prefix of every output tensor's bytes).
"""

from __future__ import annotations

import hashlib
import json
import sys

import torch

from ddsm import load_supernet
from ddsm.diffusion import NoiseSchedule
from ddsm.plan import StepPlan
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import TrajectoryCache, generate_many


def digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()[:16]


def main(out: str) -> int:
    torch.set_num_threads(1)
    hashes = {}
    for name in ("digits", "digits-progressive", "digits-spectral"):
        net = load_supernet(name)
        for kind, eta in (("ddim", 0.0), ("ddpm", 1.0)):
            s = make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind=kind, steps=6, eta=eta))
            plans = [StepPlan((0.25,) * 6), StepPlan((1.0, 1.0, 0.5, 0.5, 0.25, 0.25)),
                     StepPlan((0.5, 0.5, 1.0, 1.0, 1.0, 0.75))]
            seeds = list(range(7, 19))
            for i, p in enumerate(plans):
                hashes[f"{name}/{kind}/generate/{i}"] = digest(generate(net.model, s, p, seeds))
            cache = TrajectoryCache(2**26)
            for fuse in (False, True):
                m = generate_many(net.model, s, plans, seeds, fuse=fuse, cache=cache, batch_size=5)
                hashes[f"{name}/{kind}/many/fuse{fuse}"] = digest(m)
        if name == "digits-progressive":
            s = make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind="ddim", steps=6))
            plan = StepPlan((0.5,) * 6, (8, 8, 16, 16, 16, 16))
            hashes[f"{name}/progressive"] = digest(generate(net.model, s, plan, list(range(5))))
    with open(out, "w") as f:
        json.dump(hashes, f, indent=1)
    print(f"{len(hashes)} hashes -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
