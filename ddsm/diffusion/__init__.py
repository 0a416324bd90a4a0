"""Noise schedules, the forward process and training losses."""

from ddsm.diffusion.losses import distilled_eps_loss, eps_loss
from ddsm.diffusion.noise import NoiseSchedule, make_betas
from ddsm.diffusion.resolution import alpha_bar_after_growth, downsample, grow, upsample

__all__ = ["NoiseSchedule", "alpha_bar_after_growth", "distilled_eps_loss", "downsample", "eps_loss", "grow",
           "make_betas", "upsample"]
