"""Training losses for the supernet."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddsm.errors import DDSMError


def eps_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The simple DDPM objective: mean squared error of the predicted noise."""
    return F.mse_loss(eps_pred.float(), eps.float())


def distilled_eps_loss(
    eps_pred: torch.Tensor, eps: torch.Tensor, eps_teacher: torch.Tensor, weight: float
) -> torch.Tensor:
    """In-place distillation for a narrow width.

    ``(1 - weight) * |eps_pred - eps|^2 + weight * |eps_pred - eps_teacher|^2``
    where ``eps_teacher`` is the widest net's detached prediction for the same
    noisy input: the teacher's target has lower variance than the sampled noise.
    """
    loss = eps_loss(eps_pred, eps)
    if weight == 0:
        return loss
    return (1 - weight) * loss + weight * F.mse_loss(eps_pred.float(), eps_teacher.detach().float())


# ---------------------------------------------------------------------------- spectrum-aware distillation


def spectrum_weights(x0: torch.Tensor, floor: float) -> torch.Tensor:
    """Per-frequency weights ``1 / |DFT(x0)|`` of images (N, C, H, W), clamped and normalised to mean 1.

    Spectral Diffusion weights the frequency-domain distillation by the
    inverse of the data's spectrum magnitude, so the rare high frequencies
    count as much as the dominant low ones. That weight is unbounded where the
    mean magnitude is (near) zero, so the magnitude is first raised to at least
    ``floor`` times its largest value (the weights then span at most a factor
    ``1 / floor``), and the weights are divided by their mean so the term has
    the scale of a plain squared error. Returns (H, W) float32.
    """
    m = torch.fft.fft2(x0.double(), norm="ortho").abs().mean(dim=(0, 1))
    peak = float(m.max()) if m.numel() else 0.0
    detail = float(m.flatten()[1:].max()) if m.numel() > 1 else 0.0  # every frequency but DC
    if not (math.isfinite(peak) and detail > 1e-12 * max(peak, 1e-300)):
        what = "is zero everywhere" if not peak > 0 else "is zero at every frequency but DC (constant images)"
        raise DDSMError(f"spectrum-aware distillation needs data with a spectrum to weight; the training images' mean "
                        f"|DFT| {what}: set train.spectral_weight to 0")
    w = 1.0 / m.clamp_min(floor * peak)
    return (w / w.mean()).float()


def time_weighted_spectrum(weights: torch.Tensor, t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """Per-sample weights (B, H, W) ``weights ** (1 - t / T)``, each normalised to mean 1.

    Low frequencies are settled early in sampling (large t) and high ones
    late: near t = T every frequency counts the same, near t = 0 the full
    inverse-spectrum emphasis on high frequencies applies.
    """
    s = (1.0 - t.float() / num_timesteps).clamp(0, 1).reshape(-1, 1, 1)
    w = torch.exp(s * torch.log(weights)[None])
    return w / w.mean(dim=(-2, -1), keepdim=True)


def spectral_distill_loss(eps_pred: torch.Tensor, eps_teacher: torch.Tensor, weights: torch.Tensor,
                          alpha_bar: torch.Tensor, gamma: float) -> torch.Tensor:
    """The spectrum-aware term: the narrow width's predicted clean image against the widest's in the DFT domain.

    With ``x0_hat = (x_t - sqrt(1 - ab) eps_hat) / sqrt(ab)`` both predictions
    share ``x_t``, so ``x0_s - x0_T = -(eps_s - eps_T) / sqrt(SNR)`` with
    ``SNR = ab / (1 - ab)``. Each sample's weighted squared DFT error of x0_hat
    gets the time weight ``min(SNR, gamma)`` (min-SNR weighting, Hang et al.
    2023): without it the x0 error explodes as ab -> 0. The term is computed in
    the equivalent, numerically stable form
    ``min(1, gamma / SNR) * mean_f w(f) |DFT(eps_s - eps_T)(f)|^2``,
    which is bounded wherever the weights are. ``weights`` is (H, W) or (B, H, W).
    """
    diff = eps_pred.float() - eps_teacher.detach().float()
    power = torch.fft.fft2(diff, norm="ortho").abs().pow(2)  # (B, C, H, W)
    w = weights if weights.ndim == 3 else weights[None]
    per_sample = (power * w[:, None]).mean(dim=(1, 2, 3))
    ab = alpha_bar.to(device=diff.device, dtype=torch.float64)
    snr = ab / (1 - ab).clamp_min(1e-12)
    scale = torch.clamp(gamma / snr, max=1.0).to(diff.dtype)
    return (scale * per_sample).mean()


def hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the student's hidden map and the teacher's first channels (its slice).

    A narrow width's channels are the prefix of the wide net's, so its map is
    matched against the same prefix of the teacher's.
    """
    c = student_hidden.shape[1]
    return F.l1_loss(student_hidden.float(), teacher_hidden[:, :c].detach().float())
