"""DDIM (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", 2021)."""

from __future__ import annotations

import torch

from ddsm.samplers.base import Sampler, SamplerOutput


class DDIMSampler(Sampler):
    """Generalised DDIM step; eta = 0 is deterministic, eta = 1 matches DDPM's variance."""

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.config.eta > 0

    def step(self, model_output: torch.Tensor, timestep: float, sample: torch.Tensor,
             noise: torch.Tensor | None = None) -> SamplerOutput:
        """Move ``sample`` from ``timestep`` to the next visited timestep given the model's output (ε, v or x0)."""
        ab_t, ab_prev, _ = self._alpha_bars(timestep, sample.device, sample.dtype)
        eps, x0 = self._eps_x0(model_output, sample, ab_t)
        sigma = self.config.eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
        direction = (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        prev = ab_prev.sqrt() * x0 + direction
        if self.config.eta > 0:
            if noise is None:
                raise ValueError("DDIM with eta > 0 needs `noise` of the sample's shape")
            prev = prev + sigma * noise
        return SamplerOutput(prev_sample=prev, pred_original_sample=x0)
