"""Training losses for the supernet."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
