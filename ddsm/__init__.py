"""ddsm: denoising diffusion step-aware models.

Train one slimmable supernet, then sample with a network width chosen per
denoising step. The public API is what ``__all__`` lists here, plus the
``__all__`` of the packages the README's Python tour imports from:
:mod:`ddsm.search` (search spaces, runs, fronts), :mod:`ddsm.metrics`
(evaluators, ``register_metric``), :mod:`ddsm.diffusion` (the noise schedule)
and the bridges :mod:`ddsm.integrations.diffusers` and
:mod:`ddsm.integrations.slim_pipeline`. Everything else is internal and may change.
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
from ddsm.nn import BACKBONES, Backbone, SlimmedUNet, SlimUNet, build_backbone
from ddsm.samplers import DDIMSampler, DDPMSampler, SamplerConfig, generate, make_sampler
from ddsm.plan import StepPlan
from ddsm.samplers.progressive import ResolutionWarning
from ddsm.schedule import Schedule
from ddsm.spectrum import SpectrumFit, fit_power_spectrum, rule_resolutions
from ddsm.run_configs import distill_run_config, slim_run_config, train_run_config
from ddsm.train import Trainer

__version__ = "0.1.0"

__all__ = [
    "BACKBONES", "Backbone", "CostModel", "DDIMSampler", "DDPMSampler", "DDSMError", "DataConfig", "DiffusionConfig", "ImageData", "ModelConfig",
    "NoiseSchedule", "ResolutionWarning", "RunConfig", "SamplerConfig", "Schedule", "SlimUNet", "SlimmedUNet", "SpectrumFit",
    "StepPlan", "Supernet", "TrainConfig", "Trainer", "UNetConfig", "fit_power_spectrum", "generate", "load_data",
    "load_digits", "load_run_config", "load_supernet", "make_sampler", "register_metric", "resolve_device", "rule_resolutions",
    "save_supernet", "build_backbone", "distill_run_config", "slim_run_config", "train_run_config",
]
