"""The registry of backbones: a name for every network family, and the one place a model config becomes a network.

Adding a backbone is one module satisfying :class:`~ddsm.nn.backbone.Backbone`
and one line in :data:`BACKBONES`. Which backbone a
:class:`~ddsm.config.ModelConfig` means is :func:`backbone_name`: its
``backbone`` field, else the section that describes its architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ddsm.config import ModelConfig
from ddsm.errors import DDSMError
from ddsm.limits import short
from ddsm.nn.backbone import Backbone
from ddsm.nn.slimmed import SlimmedUNet
from ddsm.nn.unet import SlimUNet

#: largest supernet, in parameters at width 1 (1e9: 4 GB of float32 weights, about 16 GB to train with AdamW)
MAX_PARAMETERS = 10**9


def _unet(config: ModelConfig) -> Backbone:
    if config.diffusers is not None or config.dit is not None:
        other = "a diffusers section; that is 'diffusers_unet'" if config.diffusers is not None else \
            "a dit section; that is 'dit'"
        raise DDSMError(f"backbone 'unet' cannot build a model config with {other}")
    u = config.unet
    with torch.device("meta"):  # counted on the meta device: no memory, no initialisation
        n = sum(p.numel() for p in SlimUNet(u).parameters())
    if n > MAX_PARAMETERS:
        raise DDSMError(f"this supernet would have about {n:.3g} parameters (base_channels {u.base_channels}, "
                        f"channel_mults {short(list(u.channel_mults), 40)}, num_res_blocks {u.num_res_blocks}); "
                        f"the limit is {MAX_PARAMETERS:.0e}: lower base_channels, channel_mults or num_res_blocks")
    return SlimUNet(u)


def _dit(config: ModelConfig) -> Backbone:
    from ddsm.nn.dit import SlimDiT

    d = config.dit
    if d is None:
        raise DDSMError("backbone 'dit' needs a dit section in the model config (model: {dit: {...}})")
    with torch.device("meta"):
        n = sum(p.numel() for p in SlimDiT(d).parameters())
    if n > MAX_PARAMETERS:
        raise DDSMError(f"this supernet would have about {n:.3g} parameters (hidden_size {d.hidden_size}, depth "
                        f"{d.depth}, mlp_ratio {d.mlp_ratio:g}); the limit is {MAX_PARAMETERS:.0e}: lower hidden_size, "
                        "depth or mlp_ratio")
    return SlimDiT(d)


def _slimmed_diffusers(config: ModelConfig) -> Backbone:
    return SlimmedUNet(config)  # its widths were checked against the model's groups and heads by ddsm slim


def _slimmed_diffusers_dit(config: ModelConfig) -> Backbone:
    from ddsm.nn.slimmed_dit import SlimmedDiT

    return SlimmedDiT(config)  # its geometry (dit section) was recorded from the diffusers config by ddsm slim


@dataclass(frozen=True)
class Registered:
    """A backbone's entry: how to build it, and which section of the model config holds its architecture."""

    build: Callable[[ModelConfig], Backbone]  # freshly initialised; weights are loaded by the caller
    section: str  # the ModelConfig field that is the backbone's own ``config``


#: registered backbones by name
BACKBONES: dict[str, Registered] = {
    "unet": Registered(_unet, "unet"),
    "diffusers_unet": Registered(_slimmed_diffusers, "diffusers"),
    "dit": Registered(_dit, "dit"),
    "diffusers_dit": Registered(_slimmed_diffusers_dit, "dit"),
}


def backbone_name(config: ModelConfig) -> str:
    """The backbone ``config`` names (``model.backbone``), else the one its sections describe.

    A diffusers section means ``diffusers_unet`` (``diffusers_dit`` when it holds a transformer), a dit section
    ``dit``; otherwise ``unet``.
    """
    if config.backbone is not None:
        return config.backbone
    if config.diffusers is not None and config.diffusers.transformer is not None:
        return "diffusers_dit"
    if config.dit is not None:
        return "dit"
    return "diffusers_unet" if config.diffusers is not None else "unet"


def _entry(config: ModelConfig) -> Registered:
    name = backbone_name(config)
    if name not in BACKBONES:
        raise DDSMError(f"backbone {short(name, 64)} is not registered; registered backbones: "
                        f"{', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def build_backbone(config: ModelConfig) -> Backbone:
    """The supernet ``config`` describes, freshly initialised; a one-line DDSMError for an unregistered backbone."""
    return _entry(config).build(config)


def architecture_of(config: ModelConfig):
    """The section of ``config`` that is its backbone's own ``config`` (what a built network holds)."""
    return getattr(config, _entry(config).section)
