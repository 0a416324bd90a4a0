"""DDPM and DDIM samplers (diffusers' set_timesteps/step contract) and the sampling loop."""

from ddsm.samplers.base import Sampler, SamplerConfig, SamplerOutput, spaced_timesteps
from ddsm.samplers.ddim import DDIMSampler
from ddsm.samplers.ddpm import DDPMSampler
from ddsm.samplers.loop import SAMPLERS, generate, make_sampler, per_step_widths

__all__ = [
    "DDIMSampler", "DDPMSampler", "SAMPLERS", "Sampler", "SamplerConfig", "SamplerOutput",
    "generate", "make_sampler", "per_step_widths", "spaced_timesteps",
]
