"""Per-step resolution (Spectral Progressive Diffusion): validation and the state changes between steps.

A resolution schedule gives every sampling step the side its state has when
the denoiser runs. It never decreases and ends at the image size. Where it
grows, the state is grown with :func:`ddsm.diffusion.resolution.grow` and the
step starts from the noisier, fractional timestep of the grown state; the step
still ends at the sampler's next visited timestep, so the number of denoiser
calls and the width lookup per step do not change.

Random numbers keep candidates comparable (common random numbers):
- the initial state and every step's noise are drawn at the image size from
  each sample's own generator, as for a full-resolution run, and projected
  orthonormally to the state's side (still unit white noise);
- the fresh high-band noise of a growth before step ``i`` comes from a
  separate stream seeded by (sample seed, ``i``), so growing or not never
  moves a later draw of the main stream.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ddsm.config import UNetConfig
from ddsm.diffusion.resolution import Transform, analysis, grow
from ddsm.errors import DDSMError
from ddsm.samplers.base import Sampler

_GROWTH_STREAM = 0x5350  # "SP": tags the growth-noise stream apart from the main one


class ResolutionWarning(UserWarning):
    """A resolution schedule runs a supernet at sides it was not trained at (training-free mode)."""


@dataclass(frozen=True)
class StepPlan:
    """A candidate with a width and a resolution per sampling step (noisiest step first)."""

    widths: tuple[float, ...]
    resolutions: tuple[int, ...]

    def pairs(self) -> tuple[tuple[float, int], ...]:
        return tuple(zip(self.widths, self.resolutions))


def check_resolution_set(sides: Sequence[int], config: UNetConfig, *, where: str = "resolutions") -> tuple[int, ...]:
    """Sorted distinct sides, each one :func:`valid_resolutions` allows, or a one-line DDSMError."""
    valid = config.valid_resolutions()
    for s in sides:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) not in valid:
            why = "does not divide" if isinstance(s, (int, np.integer)) and s > 0 and config.image_size % s else "is not valid for"
            raise DDSMError(f"{where}: resolution {s!r} {why} the image size {config.image_size}; valid: {valid}")
    return tuple(sorted({int(s) for s in sides}))


def check_resolutions(resolutions: Sequence[int] | None, config: UNetConfig, num_steps: int) -> list[int]:
    """One side per sampling step: None means the image size throughout; otherwise validated."""
    if resolutions is None:
        return [config.image_size] * num_steps
    res = list(resolutions)
    if len(res) != num_steps:
        raise DDSMError(f"resolution schedule has {len(res)} entries but the sampler takes {num_steps} steps")
    check_resolution_set(res, config, where="resolution schedule")
    for i in range(1, len(res)):
        if res[i] < res[i - 1]:
            raise DDSMError(f"resolution schedule decreases at step {i}: {res[i - 1]} -> {res[i]}; "
                            "a resolution may only grow along the trajectory")
    if res[-1] != config.image_size:
        raise DDSMError(f"resolution schedule ends at {res[-1]}; the last step must run at the image size "
                        f"{config.image_size}")
    return [int(r) for r in res]


def warn_untrained(resolutions: Sequence[int], trained: Sequence[int], *, stacklevel: int = 3) -> None:
    """Warn (once per call) when a schedule uses sides the supernet was not trained at."""
    extra = sorted(set(resolutions) - set(trained))
    if extra:
        warnings.warn(f"supernet was trained at resolutions {sorted(trained)}; steps at {extra} run training-free "
                      "(expect lower quality; train with train.resolutions to fix)", ResolutionWarning,
                      stacklevel=stacklevel)


def growth_noise(seeds: Sequence[int], step: int, shape: tuple[int, ...], device) -> torch.Tensor:
    """Standard-normal noise for a growth before ``step``: one stream per (sample seed, step)."""
    out = []
    for s in seeds:
        state = np.random.SeedSequence([int(s), int(step), _GROWTH_STREAM]).generate_state(1, np.uint64)[0]
        out.append(torch.randn(shape, generator=torch.Generator().manual_seed(int(state))))
    return torch.stack(out).to(device)


def to_side(noise: torch.Tensor | None, side: int, transform: Transform = "auto") -> torch.Tensor | None:
    """Project image-size white noise to ``side``; it stays unit white noise."""
    return None if noise is None else analysis(noise, side, transform)


def enter_growth(sampler: Sampler, step: int, x: torch.Tensor, side: int, seeds: Sequence[int],
                 transform: Transform = "auto") -> tuple[torch.Tensor, float]:
    """Grow the state ``x`` that sits at visited timestep ``step`` to ``side``.

    Returns the grown state and the fractional timestep it is at; the sampler
    is told that step ``step`` now starts there.
    """
    t = float(sampler.timesteps[step])
    ab = sampler.schedule.alpha_bar_at(t)
    noise = growth_noise(seeds, step, (x.shape[1], side, side), x.device).to(x.dtype)
    y, ab_new = grow(x, ab, side, noise, transform)
    t_new = float(sampler.schedule.timestep_for_alpha_bar(ab_new))
    sampler.enter_at(t_new, step)
    return y, t_new
