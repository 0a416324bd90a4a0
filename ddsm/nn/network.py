"""The one place a model config becomes a network: ddsm's own UNet, or a slimmed diffusers model."""

from __future__ import annotations

from torch import nn

from ddsm.config import ModelConfig


def build_network(config: ModelConfig) -> nn.Module:
    """The supernet ``config`` describes, freshly initialised (weights are loaded by the caller)."""
    if config.diffusers is not None:
        from ddsm.nn.slimmed import SlimmedUNet

        return SlimmedUNet(config)
    from ddsm.nn.unet import SlimUNet

    return SlimUNet(config.unet)
