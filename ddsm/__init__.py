"""ddsm: denoising diffusion step-aware models.

Train one slimmable UNet supernet, then sample with a network width chosen per
denoising step. The public API is re-exported here; everything else is private.
"""

from ddsm.checkpoint import Supernet, load_supernet, save_supernet
from ddsm.config import (
    DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig, UNetConfig, load_run_config,
)
from ddsm.cost.model import CostModel
from ddsm.data import ImageData, load_data, load_digits
from ddsm.device import resolve_device
from ddsm.diffusion import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.metrics.registry import register_metric
from ddsm.nn import SlimUNet
from ddsm.nn.slimmed import SlimmedUNet
from ddsm.samplers import DDIMSampler, DDPMSampler, SamplerConfig, generate, make_sampler
from ddsm.plan import StepPlan
from ddsm.samplers.progressive import ResolutionWarning
from ddsm.schedule import Schedule
from ddsm.spectrum import SpectrumFit, fit_power_spectrum, rule_resolutions
from ddsm.train import Trainer

__version__ = "0.1.0"

__all__ = [
    "CostModel", "DDIMSampler", "DDPMSampler", "DDSMError", "DataConfig", "DiffusionConfig", "ImageData", "ModelConfig",
    "NoiseSchedule", "ResolutionWarning", "RunConfig", "SamplerConfig", "Schedule", "SlimUNet", "SlimmedUNet", "SpectrumFit",
    "StepPlan", "Supernet", "TrainConfig", "Trainer", "UNetConfig", "fit_power_spectrum", "generate", "load_data",
    "load_digits", "load_run_config", "load_supernet", "make_sampler", "register_metric", "resolve_device", "rule_resolutions",
    "save_supernet",
]
