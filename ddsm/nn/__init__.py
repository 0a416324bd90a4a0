"""Networks: the backbone slot (protocol and registry), slimmable layers, and the backbones ddsm ships.

- :mod:`ddsm.nn.backbone`: the :class:`Backbone` protocol every network satisfies;
- :mod:`ddsm.nn.registry`: backbones by name, and the one place a model config becomes a network;
- :mod:`ddsm.nn.slimmable`: prefix-sliced layers (conv, linear, GroupNorm);
- :mod:`ddsm.nn.unet`: ddsm's own slimmable UNet (``unet``);
- :mod:`ddsm.nn.diffusers_unet` and :mod:`ddsm.nn.slimmed`: a user's diffusers UNet2DModel made a supernet
  (``diffusers_unet``); :mod:`ddsm.nn.channel_order` reorders its channels by importance;
- :mod:`ddsm.nn.dit`: ddsm's own slimmable diffusion transformer (``dit``);
- :mod:`ddsm.nn.diffusers_dit` and :mod:`ddsm.nn.slimmed_dit`: a user's diffusers DiTTransformer2DModel made a
  supernet (``diffusers_dit``).
"""

from ddsm.nn.backbone import Backbone
from ddsm.nn.registry import BACKBONES, build_backbone
from ddsm.nn.slimmable import SlimConv2d, SlimGroupNorm, SlimLinear, set_active_width
from ddsm.nn.slimmed import SlimmedUNet
from ddsm.nn.unet import DOWN_BLOCKS, UP_BLOCKS, SlimUNet

__all__ = ["BACKBONES", "Backbone", "DOWN_BLOCKS", "SlimConv2d", "SlimGroupNorm", "SlimLinear", "SlimUNet", "SlimmedUNet",
           "UP_BLOCKS", "build_backbone", "set_active_width"]
