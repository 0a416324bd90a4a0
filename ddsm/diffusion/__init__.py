"""Noise schedules, the forward process and training losses."""

from ddsm.diffusion.losses import distilled_eps_loss, eps_loss
from ddsm.diffusion.noise import NoiseSchedule, make_betas

__all__ = ["NoiseSchedule", "distilled_eps_loss", "eps_loss", "make_betas"]
