"""Variance-preserving noise schedules and the forward process.

``x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps`` with
``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` on the integer grid t = 0..T-1
(the convention of DDPM and diffusers). Between grid points ``log alpha_bar``
is interpolated linearly, so fractional timesteps (needed after a resolution
change, or by continuous-time samplers) have a well-defined noise level.
"""

from __future__ import annotations

import math

import torch

from ddsm.config import DiffusionConfig


def make_betas(config: DiffusionConfig) -> torch.Tensor:
    """beta_t for t = 0..T-1 in float64."""
    T = config.num_timesteps
    if config.beta_schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, T, dtype=torch.float64)
    # Nichol & Dhariwal (2021), "Improved DDPM": alpha_bar follows a squared cosine.
    s = 0.008
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


class NoiseSchedule:
    """alpha_bar on the training grid, with interpolation for fractional t."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        self.num_timesteps = config.num_timesteps
        self.prediction_type = config.prediction_type  # what the denoiser outputs: samplers convert it
        self.clips = not config.latent  # a clean-sample estimate in [-1, 1] may be clipped (not a latent's)
        self.betas = make_betas(config)
        self.alphas = 1.0 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)  # float64, (T,)
        self._log_ab = torch.log(self.alpha_bar)

    def alpha_bar_at(self, t: torch.Tensor | float) -> torch.Tensor:
        """alpha_bar at (possibly fractional) timesteps in [0, T-1]; float64."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_timesteps - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.num_timesteps - 1)
        frac = t - lo.double()
        return torch.exp(self._log_ab[lo] * (1 - frac) + self._log_ab[hi] * frac)

    def timestep_for_alpha_bar(self, alpha_bar: torch.Tensor | float) -> torch.Tensor:
        """The fractional timestep whose alpha_bar is the given value (inverse of alpha_bar_at)."""
        target = torch.log(torch.as_tensor(alpha_bar, dtype=torch.float64))
        neg = -self._log_ab  # increasing in t
        x = (-target).clamp(neg[0], neg[-1])
        hi = torch.searchsorted(neg, x.reshape(-1)).clamp(1, self.num_timesteps - 1).reshape(x.shape)
        lo = hi - 1
        frac = (x - neg[lo]) / (neg[hi] - neg[lo])
        return lo.double() + frac

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Draw x_t from q(x_t | x0) with the given noise ``eps``."""
        ab = self.alpha_bar_at(t).to(device=x0.device, dtype=x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps
