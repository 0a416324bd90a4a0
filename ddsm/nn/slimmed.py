"""A slimmed diffusers model as a ddsm supernet: what the samplers, the cost model and the search take.

:class:`SlimmedUNet` wraps the slimmable mirror of a user's ``UNet2DModel``
(:class:`~ddsm.nn.diffusers_unet.SlimUNet2DModel`) behind the interface of
:class:`~ddsm.nn.unet.SlimUNet`: ``config`` (a :class:`~ddsm.config.UNetConfig`
holding the image size, channels and widths), ``set_active_width``,
``check_width``, ``extract_subnet`` and ``forward(x, t)``. So a slimmed model
is sampled, costed, searched and exported by the same code as a supernet
ddsm trained itself.

With ``freeze_full`` (the default) the supernet holds two nets: ``original``,
the user's weights untouched, which runs at width 1, and ``net``, the shared
weights of every narrower width, which fine-tuning changes. Shared weights
cannot be fine-tuned for narrow widths without moving the full width too, so
this is the only way the user's model is never degraded; it costs one more
copy of the weights on disk. Without ``freeze_full`` there is one net, and
the full width is fine-tuned with the rest (towards the original).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ddsm.config import ModelConfig, UNetConfig, check_width_set, width_index
from ddsm.errors import DDSMError
from ddsm.nn.diffusers_unet import SlimUNet2DModel
from ddsm.nn.slimmable import freeze_width


def surrogate_unet_config(unet: dict[str, Any], widths) -> UNetConfig:
    """The :class:`UNetConfig` a slimmed model shows the samplers, the cost model and the memory guard.

    It has the diffusers model's image size, input channels, widths, levels,
    channels per level (``block_out_channels`` as base × multiplier) and the
    sides that get attention, so estimates made from it (activation memory,
    valid resolutions) see the real shapes. The architecture itself is the
    diffusers config; GroupNorm groups and heads are checked by the mirror, so
    ``group_channels`` here is 1.
    """
    import math

    size = unet.get("sample_size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise DDSMError(f"sample_size {size!r} is not supported; ddsm needs one square side (an int)")
    channels = [int(c) for c in unet["block_out_channels"]]
    base = math.gcd(*channels)
    attn = tuple(size // 2**i for i, kind in enumerate(unet.get("down_block_types", ())) if kind.startswith("Attn"))
    return UNetConfig(image_size=size, in_channels=unet.get("in_channels", 3), base_channels=base,
                      channel_mults=tuple(c // base for c in channels), num_res_blocks=unet.get("layers_per_block", 2),
                      attn_resolutions=attn, widths=check_width_set(tuple(float(w) for w in widths)),
                      group_channels=1)


class _AtWidth(nn.Module):
    """One width of a slimmed model as plain torch layers (for MAC counting and deployment)."""

    def __init__(self, net: nn.Module, config: UNetConfig, width: float) -> None:
        super().__init__()
        self.net, self.config, self.static_width = net, config, width

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        return self.net(x, t)


class SlimmedUNet(nn.Module):
    """A diffusers UNet2DModel made a supernet (module docstring); ``forward(x, t) -> eps`` at the active width."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.diffusers is None:
            raise DDSMError("SlimmedUNet needs a model config with a diffusers section (ddsm slim writes one)")
        d = config.diffusers
        self.config = config.unet
        self.net = SlimUNet2DModel(d.unet, widths=config.unet.widths)
        self.original = SlimUNet2DModel(d.unet, widths=(1.0,)).requires_grad_(False) if d.freeze_full else None
        self.width = max(config.unet.widths)

    def check_width(self, width: float) -> float:
        """Return ``width`` as the supernet's own float, or raise naming the valid set."""
        i = width_index(width, self.config.widths)
        if i is None:
            raise DDSMError(f"width {width!r} is not served by this supernet; valid widths: {list(self.config.widths)}")
        return self.config.widths[i]

    def set_active_width(self, width: float) -> "SlimmedUNet":
        """Run at ``width`` (one of ``config.widths``) from now on."""
        self.width = self.check_width(width)
        self.net.set_active_width(self.width)
        return self

    def _active(self) -> SlimUNet2DModel:
        return self.original if self.original is not None and self.width == 1.0 else self.net

    def extract_subnet(self, width: float) -> nn.Module:
        """A copy made of plain ``torch.nn`` layers at ``width``, with this supernet's ``config``."""
        width = self.check_width(width)
        self.set_active_width(width)
        return _AtWidth(freeze_width(copy.deepcopy(self._active()), width), self.config, width)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, class_labels: torch.Tensor | None = None, *,
                return_hidden: bool = False):
        """Predict ε from the noisy ``x`` (B, C, H, W) at timesteps ``t`` (scalar or (B,), may be fractional).

        ``return_hidden`` also returns the last hidden map (``SlimUNet2DModel.forward``).
        """
        return self._active()(x, t, class_labels=class_labels, return_hidden=return_hidden)
