"""Per-step resolution (Spectral Progressive Diffusion): validation and the state changes between steps.

A resolution schedule gives every sampling step the side its state has when
the denoiser runs. It never decreases and ends at the image size. Where it
grows, the state is grown with :func:`ddsm.diffusion.resolution.grow` and the
step starts from the noisier, fractional timestep of the grown state; the step
still ends at the sampler's next visited timestep, so the number of denoiser
calls and the width lookup per step do not change.

Random numbers keep candidates comparable (common random numbers):
- the initial noise and every step's noise are drawn at the image size from
  each sample's own generator, exactly as for a full-resolution run, and
  projected orthonormally to the state's side (still unit white noise);
- the fresh noise a growth puts in the new band is the initial noise's own
  band there. It was never used (the state so far only saw the lower band of
  the initial noise and of the step noises), so it is independent of the
  state, as the maths requires; and the grown state is close to where the
  full-resolution run is at that time, because high frequencies are noise
  there. No extra draw is made, so later draws never move.

One orthonormal family serves a whole supernet (:func:`family_transform`):
Haar when every side is the image size over a power of 2, else the DCT, so
projections to any side nest and every plan sees the same low bands.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from ddsm.config import UNetConfig
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.diffusion.resolution import Transform, analysis, grow, is_octave
from ddsm.errors import DDSMError
from ddsm.samplers.base import Sampler


class ResolutionWarning(UserWarning):
    """A resolution schedule runs a supernet at sides it was not trained at (training-free mode)."""


def check_resolution_set(sides: Sequence[int], config: UNetConfig, *, where: str = "resolutions") -> tuple[int, ...]:
    """Sorted distinct sides, each one ``config.valid_resolutions()`` allows, or a one-line DDSMError."""
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
        if res[i] % res[i - 1]:
            raise DDSMError(f"resolution schedule grows {res[i - 1]} -> {res[i]} at step {i}; a growth needs a "
                            "whole ratio per side")
    if res[-1] != config.image_size:
        raise DDSMError(f"resolution schedule ends at {res[-1]}; the last step must run at the image size "
                        f"{config.image_size}")
    return [int(r) for r in res]


def untrained_message(resolutions: Sequence[int], trained: Sequence[int], *, steps: str = "steps") -> str | None:
    """What to say when ``resolutions`` include sides the supernet was not trained at (None: all trained)."""
    extra = sorted(set(resolutions) - set(trained))
    if not extra:
        return None
    return (f"supernet was trained at resolutions {sorted(trained)}; {steps} at {extra} run training-free "
            "(lower quality expected; fine-tune with train.resolutions)")


def warn_untrained(resolutions: Sequence[int], trained: Sequence[int], *, stacklevel: int = 3) -> None:
    """Warn (once per call) when a schedule uses sides the supernet was not trained at."""
    msg = untrained_message(resolutions, trained)
    if msg:
        warnings.warn(msg, ResolutionWarning, stacklevel=stacklevel)


def family_transform(config: UNetConfig, transform: Transform = "auto") -> str:
    """The one orthonormal family used for this supernet: Haar if every side is image size / 2^k, else the DCT."""
    if transform != "auto":
        return transform
    n = config.image_size
    return "haar" if all(is_octave(n // s) for s in config.valid_resolutions()) else "dct"


def to_side(noise: torch.Tensor | None, side: int, transform: Transform = "auto") -> torch.Tensor | None:
    """Project image-size white noise to ``side``; it stays unit white noise."""
    return None if noise is None else analysis(noise, side, transform)


def grow_at(noise: NoiseSchedule, t: float, x: torch.Tensor, side: int, initial_noise: torch.Tensor,
            transform: Transform = "auto") -> tuple[torch.Tensor, torch.Tensor, float]:
    """Grow the state ``x`` at timestep ``t`` to ``side``: (grown state, its alpha_bar, its fractional timestep).

    ``initial_noise`` is the image-size noise the trajectory started from; its
    band between the two sides is the growth's fresh noise.
    """
    fresh = to_side(initial_noise, side, transform).to(x.dtype)
    y, ab_new = grow(x, noise.alpha_bar_at(t), side, fresh, transform)
    return y, ab_new, float(noise.timestep_for_alpha_bar(ab_new))


def enter_growth(sampler: Sampler, step: int, x: torch.Tensor, side: int, initial_noise: torch.Tensor,
                 transform: Transform = "auto") -> tuple[torch.Tensor, float]:
    """Grow the state ``x`` that sits at visited timestep ``step`` to ``side`` (see :func:`grow_at`).

    Returns the grown state and the fractional timestep it is at; the sampler
    is told that step ``step`` now starts there.
    """
    y, _, t_new = grow_at(sampler.schedule, float(sampler.timesteps[step]), x, side, initial_noise, transform)
    sampler.enter_at(t_new, step)
    return y, t_new
