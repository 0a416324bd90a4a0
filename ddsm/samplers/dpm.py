"""DPM-Solver++(2M) (Lu et al., 2022): a second-order multistep solver of the diffusion ODE in data prediction.

With α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), λ_t = log(α_t / σ_t) and the model's
clean-image estimate x̂₀ at each visited timestep, a step from t to t' with
h = λ_t' − λ_t is

    first order (the first step, and the last):  x_t' = (σ_t'/σ_t) x_t − α_t' (e^{−h} − 1) D₀
    second order (every other step):             the same plus − ½ α_t' (e^{−h} − 1) D₁

with D₀ = x̂₀(t) and D₁ = (x̂₀(t) − x̂₀(s)) / r, r = (λ_t − λ_s) / h, s the
previous visited timestep: diffusers' ``DPMSolverMultistepScheduler`` with
``solver_order=2``, ``algorithm_type="dpmsolver++"``, ``solver_type="midpoint"``
and ``final_sigmas_type="zero"`` (the last step lands on x̂₀). It is
deterministic, one model call per step, and (as diffusers') never clips x̂₀:
``clip_sample`` does not apply to it.

The solver needs the previous step's x̂₀. ddsm's samplers keep no state
between steps (candidate schedules share prefixes and the trajectory cache
stores states, :mod:`ddsm.samplers.batched`), so the history travels *in the
state*: the state is the image with x̂₀(s) appended along the channels
(:meth:`initial_state`, :meth:`model_input`, :meth:`final`), and every loop,
cache and fused call carries it unchanged. A width per step is a lookup, as
for DDIM. Resolution schedules are not supported with it.
"""

from __future__ import annotations

import torch

from ddsm.diffusion.prediction import eps_and_x0
from ddsm.samplers.base import HistoryInState, SamplerOutput


class DPMSolverPP2M(HistoryInState):
    """DPM-Solver++(2M): data-prediction multistep solver, first order at the first and last steps."""

    parts = 2  # the image, the previous step's x̂₀ (none yet: zeros)

    def _lambda_sigma_alpha(self, t: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ab = self.schedule.alpha_bar_at(t)  # float64
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        return (alpha.log() - sigma.log()).to(device, dtype), sigma.to(device, dtype), alpha.to(device, dtype)

    def step(self, model_output: torch.Tensor, timestep: float, sample: torch.Tensor,
             noise: torch.Tensor | None = None) -> SamplerOutput:
        """Move the state (image and previous x̂₀) from ``timestep`` to the next visited one."""
        c = sample.shape[1] // 2
        x, previous = sample[:, :c], sample[:, c:]
        ab_t = self.schedule.alpha_bar_at(float(timestep)).to(x.device, x.dtype)
        _, x0 = eps_and_x0(model_output, x, ab_t, self.schedule.prediction_type)  # unclipped, as diffusers
        prev = self.prev_timestep(timestep)
        i = self._index[float(timestep)]
        if prev < 0:  # the last step lands on the clean-image estimate (sigma' = 0)
            return SamplerOutput(prev_sample=torch.cat([x0, x0], dim=1), pred_original_sample=x0)
        lam_t, sigma_t, _ = self._lambda_sigma_alpha(float(timestep), x.device, x.dtype)
        lam_p, sigma_p, alpha_p = self._lambda_sigma_alpha(prev, x.device, x.dtype)
        h = lam_p - lam_t
        phi = torch.expm1(-h)  # e^{-h} - 1
        out = (sigma_p / sigma_t) * x - alpha_p * phi * x0
        if i > 0:  # second order from the previous step's estimate
            lam_s, _, _ = self._lambda_sigma_alpha(float(self.timesteps[i - 1]), x.device, x.dtype)
            r = (lam_t - lam_s) / h
            out = out - 0.5 * alpha_p * phi * (x0 - previous) / r
        return SamplerOutput(prev_sample=torch.cat([out, x0], dim=1), pred_original_sample=x0)
