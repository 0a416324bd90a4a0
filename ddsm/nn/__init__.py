"""Slimmable layers and the slimmable UNet supernet."""

from ddsm.nn.slimmable import SlimConv2d, SlimGroupNorm, SlimLinear, set_active_width
from ddsm.nn.unet import DOWN_BLOCKS, UP_BLOCKS, SlimUNet

__all__ = ["DOWN_BLOCKS", "UP_BLOCKS", "SlimConv2d", "SlimGroupNorm", "SlimLinear", "SlimUNet", "set_active_width"]
