"""Typed, validated configuration, split by job.

- :mod:`ddsm.config.schema`: the frozen pydantic models and :func:`validate`;
- :mod:`ddsm.config.widths`: width multipliers (the default set, the one matching rule);
- :mod:`ddsm.config.reader`: the hardened YAML reader, :func:`load_yaml`;
- :mod:`ddsm.config.overrides`: a run config from a file plus dotted overrides.

Everything is re-exported here, so ``from ddsm.config import RunConfig`` is the usual import.
"""

from ddsm.config.overrides import apply_overrides, load_run_config
from ddsm.config.reader import load_yaml
from ddsm.config.schema import (
    MAX_TIMESTEPS, AutoencoderConfig, DataConfig, DiffusersModelConfig, DiffusionConfig, DistillConfig, DiTConfig,
    ModelConfig, RunConfig, SlimConfig, StudentConfig, TrainConfig, UNetConfig,
    _Frozen, validate,  # noqa: F401 (_Frozen: the config base)
)
from ddsm.config.widths import DEFAULT_WIDTHS, WIDTH_TOL, Widths, WidthSet, check_width_set, width_index

__all__ = [
    "DEFAULT_WIDTHS", "MAX_TIMESTEPS", "WIDTH_TOL", "AutoencoderConfig", "DataConfig", "DiffusersModelConfig",
    "DiffusionConfig", "DistillConfig", "DiTConfig", "ModelConfig", "RunConfig", "SlimConfig", "StudentConfig",
    "TrainConfig", "UNetConfig", "WidthSet", "Widths",
    "apply_overrides", "check_width_set", "load_run_config", "load_yaml", "validate", "width_index",
]
