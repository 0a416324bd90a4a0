"""Ancestral DDPM (Ho, Jain & Abbeel, 2020), with strided steps as in diffusers."""

from __future__ import annotations

import torch

from ddsm.samplers.base import Sampler, SamplerOutput


class DDPMSampler(Sampler):
    """Posterior-mean step plus noise of the "fixed small" posterior variance."""

    stochastic = True

    def step(self, model_output: torch.Tensor, timestep: float, sample: torch.Tensor,
             noise: torch.Tensor | None = None) -> SamplerOutput:
        """Draw the state at the next visited timestep from q(x_prev | x_t, x0_pred)."""
        ab_t, ab_prev, prev_t = self._alpha_bars(timestep, sample.device, sample.dtype)
        alpha_t = ab_t / ab_prev  # the alpha of the (possibly strided) step
        beta_t = 1 - alpha_t
        _, x0 = self._eps_x0(model_output, sample, ab_t)
        mean = (ab_prev.sqrt() * beta_t * x0 + alpha_t.sqrt() * (1 - ab_prev) * sample) / (1 - ab_t)
        if prev_t < 0:
            return SamplerOutput(prev_sample=mean, pred_original_sample=x0)
        if noise is None:
            raise ValueError("DDPM needs `noise` of the sample's shape for every step but the last")
        var = ((1 - ab_prev) / (1 - ab_t) * beta_t).clamp(min=1e-20)
        return SamplerOutput(prev_sample=mean + var.sqrt() * noise, pred_original_sample=x0)
