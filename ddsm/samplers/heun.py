"""Heun's second-order method on the diffusion ODE (Karras et al., 2022, Algorithm 1 with no churn).

diffusers' ``HeunDiscreteScheduler``: in the variance-exploding coordinates
x̄ = x_t / √ᾱ_t and σ_t = √((1 − ᾱ_t)/ᾱ_t), the ODE is dx̄/dσ = (x̄ − x̂₀)/σ.
A step from σ_i to σ_{i+1}:

    Euler (predictor):  d_i = (x̄_i − x̂₀(x̄_i, σ_i)) / σ_i,   x̃ = x̄_i + (σ_{i+1} − σ_i) d_i
    corrector:          d̃ = (x̃ − x̂₀(x̃, σ_{i+1})) / σ_{i+1},
                        x̄_{i+1} = x̄_i + (σ_{i+1} − σ_i) (d_i + d̃) / 2

The last step (σ_{i+1} = 0) is Euler alone and lands on x̂₀. So n steps call
the denoiser 2n − 1 times, and :attr:`timesteps` lists a timestep per *call*
(every one after the first twice, as diffusers' do): a width schedule is a
width per call, looked up by the loop like any other. The model sees the
variance-preserving x_t = √ᾱ_t x̄ (diffusers' ``scale_model_input``).

The corrector needs the step's start and its Euler derivative, and a call at a
repeated timestep is a corrector or a new step's Euler call depending on what
came before. As for the multistep solvers (:mod:`ddsm.samplers.dpm`), that
history travels *in the state*: the model's input, x̄_i, d_i and a phase plane
(1: the next call corrects), so prefix sharing, fused calls and the trajectory
cache carry it unchanged. Deterministic; clips x̂₀ only if ``clip_sample`` is
set (diffusers' Heun does not by default); resolution schedules are not
supported with it.
"""

from __future__ import annotations

import torch

from ddsm.errors import DDSMError
from ddsm.samplers.base import HistoryInState, SamplerOutput

PARTS = 4  # the model's input x_t, the step's start x̄_i, its Euler derivative d_i, the phase


class HeunSampler(HistoryInState):
    """Heun's method (diffusers' ``HeunDiscreteScheduler``): two denoiser calls per step but the last; see the
    module."""

    parts = PARTS  # an empty history is the first Euler phase

    def _sigma(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        # (sigma, sqrt(alpha_bar)) in float64; after the last step, the clean image (0, 1)
        if t < 0:
            return torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
        ab = self.schedule.alpha_bar_at(t)
        return ((1 - ab) / ab).sqrt(), ab.sqrt()

    def step(self, model_output: torch.Tensor, timestep: float, sample: torch.Tensor,
             noise: torch.Tensor | None = None) -> SamplerOutput:
        """An Euler call (a step's first) or a corrector call (its second), as the state's phase says."""
        c = sample.shape[1] // PARTS
        x, start, d, phase = (sample[:, k * c:(k + 1) * c] for k in range(PARTS))
        corrects = phase.flatten(1)[:, 0] > 0.5
        if corrects.any() != corrects.all():
            raise DDSMError("a Heun batch mixes Euler and corrector calls; step trajectories of one call index "
                            "together")
        t = float(timestep)
        sig_t, sq_t = self._sigma(t)
        _, x0 = self._eps_x0(model_output, x, sq_t.square().to(x))
        x_bar = x / sq_t.to(x)
        d_here = (x_bar - x0) / sig_t.to(x)
        zeros = torch.zeros_like(x)
        if bool(corrects.all()):  # the corrector ends the step that started one grid timestep earlier
            i = self._index[t]
            sig_s, _ = self._sigma(float(self.step_timesteps[i - 1]))
            x_bar = start + (sig_t - sig_s).to(x) * (d + d_here) / 2
            return SamplerOutput(prev_sample=torch.cat([x_bar * sq_t.to(x), zeros, zeros, zeros], dim=1),
                                 pred_original_sample=x0)
        sig_n, sq_n = self._sigma(self.prev_timestep(t))
        x_tilde = x_bar + (sig_n - sig_t).to(x) * d_here
        if float(sig_n) == 0.0:  # the last step: Euler alone, onto x̂₀
            return SamplerOutput(prev_sample=torch.cat([x_tilde, zeros, zeros, zeros], dim=1), pred_original_sample=x0)
        return SamplerOutput(prev_sample=torch.cat([x_tilde * sq_n.to(x), x_bar, d_here, torch.ones_like(x)], dim=1),
                             pred_original_sample=x0)
