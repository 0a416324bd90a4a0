"""UniPC (Zhao et al., 2023): a unified predictor-corrector solver of the diffusion ODE in data prediction.

diffusers' ``UniPCMultistepScheduler`` with its defaults (``solver_order=2``,
``solver_type="bh2"``, ``predict_x0=True``, ``lower_order_final=True``,
``final_sigmas_type="zero"``), one model call per step. With α_t = √ᾱ_t,
σ_t = √(1 − ᾱ_t), λ_t = log(α_t / σ_t), the clean-image estimate m_i of the
call at the i-th visited timestep t_i, h = λ_{t'} − λ_t and B(h) = e^{−h} − 1:

- **corrector** (every call but the first): before stepping on, the state
  x̃_i the last predictor made is corrected with the new estimate m_i:
  x_i = (σ_i/σ_{i−1}) x_{i−1} − α_i B(h) m_{i−1} − α_i B(h) (ρ D + ρ_t (m_i − m_{i−1})),
  of the order the last predictor had (order 1: ρ_t = ½, no D; order 2: D =
  (m_{i−2} − m_{i−1}) / r and (ρ, ρ_t) solve the 2 × 2 system of the B(h) variant);
- **predictor**: x̃_{i+1} = (σ_{i+1}/σ_i) x_i − α_{i+1} B(h) m_i − ½ α_{i+1} B(h) D,
  D = (m_{i−1} − m_i) / r, r = (λ_{i−1} − λ_i) / h; first order (no D) at the
  first call and the last, which lands on m_{N−1}.

The corrector needs the previous corrected state and the two previous
estimates, so, as for DPM-Solver++ (:mod:`ddsm.samplers.dpm`), the history
travels *in the state*: the image, then x_{i−1}, m_{i−1} and m_{i−2} along the
channels. Prefix sharing, fused calls and the trajectory cache carry it as
they carry any state. A width per step is a lookup. Never clips; resolution
schedules are not supported with it.
"""

from __future__ import annotations

import torch

from ddsm.diffusion.prediction import eps_and_x0
from ddsm.samplers.base import HistoryInState, SamplerOutput

PARTS = 4  # image, the last corrected state, m_{i-1}, m_{i-2}


class UniPC(HistoryInState):
    """UniPC-bh2 of order 2 (diffusers' default), first order at the first and last steps; see the module."""

    parts = PARTS

    def _lam_sig_alp(self, t: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if t < 0:  # after the last step: the clean image (sigma 0, lambda +inf)
            one = torch.tensor(1.0, dtype=torch.float64)
            return torch.tensor(float("inf"), dtype=torch.float64), one * 0.0, one
        ab = self.schedule.alpha_bar_at(t)  # float64
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        return alpha.log() - sigma.log(), sigma, alpha

    def _order(self, i: int) -> int:
        """The predictor's order at step i: 1 at the first step (no history) and the last, else 2."""
        return 1 if i == 0 or i == len(self.timesteps) - 1 else 2

    @staticmethod
    def _rhos_c(rk: torch.Tensor, hh: torch.Tensor, b_h: torch.Tensor) -> torch.Tensor:
        # the order-2 corrector's weights: R rho = b with R = [[1, 1], [r, 1]], the bh2 variant's b
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b1 = h_phi_k / b_h
        b2 = (h_phi_k / hh - 0.5) * 2 / b_h
        r = torch.stack([torch.stack([torch.ones_like(rk), torch.ones_like(rk)]), torch.stack([rk, torch.ones_like(rk)])])
        return torch.linalg.solve(r, torch.stack([b1, b2]))

    def step(self, model_output: torch.Tensor, timestep: float, sample: torch.Tensor,
             noise: torch.Tensor | None = None) -> SamplerOutput:
        """Correct the state with this call's estimate, then predict the state at the next visited timestep."""
        c = sample.shape[1] // PARTS
        x, last, m1, m2 = (sample[:, k * c:(k + 1) * c] for k in range(PARTS))
        t = float(timestep)
        i = self._index[t]
        ab_t = self.schedule.alpha_bar_at(t).to(x.device, x.dtype)
        _, m = eps_and_x0(model_output, x, ab_t, self.schedule.prediction_type)  # unclipped, as diffusers
        ts = [float(s) for s in self.timesteps]
        lam_i, sig_i, alp_i = self._lam_sig_alp(t)
        if i > 0:  # the corrector, of the order the last predictor had
            lam_p, sig_p, _ = self._lam_sig_alp(ts[i - 1])
            h = lam_i - lam_p
            hh, b_h = -h, torch.expm1(-h)
            base = (sig_i / sig_p).to(x) * last - (alp_i * torch.expm1(hh)).to(x) * m1
            if self._order(i - 1) == 1:
                x = base - (alp_i * b_h).to(x) * 0.5 * (m - m1)
            else:
                lam_pp, _, _ = self._lam_sig_alp(ts[i - 2])
                rk = (lam_pp - lam_p) / h
                rho = self._rhos_c(rk, hh, b_h)
                d1 = (m2 - m1) / rk.to(x)
                x = base - (alp_i * b_h).to(x) * (rho[0].to(x) * d1 + rho[1].to(x) * (m - m1))
        prev = self.prev_timestep(t)
        lam_n, sig_n, alp_n = self._lam_sig_alp(prev)
        h = lam_n - lam_i
        hh = -h
        out = (sig_n / sig_i).to(x) * x - (alp_n * torch.expm1(hh)).to(x) * m
        if self._order(i) == 2:  # second order from the previous estimate (bh2: rho = 1/2)
            lam_p, _, _ = self._lam_sig_alp(ts[i - 1])
            rk = (lam_p - lam_i) / h
            out = out - (alp_n * torch.expm1(hh)).to(x) * 0.5 * (m1 - m) / rk.to(x)
        return SamplerOutput(prev_sample=torch.cat([out, x, m, m1], dim=1), pred_original_sample=m)
