"""A slimmed diffusers model as a ddsm supernet: what the samplers, the cost model and the search take.

:class:`SlimmedUNet` wraps the slimmable mirror of a user's ``UNet2DModel``
(:class:`~ddsm.nn.diffusers_unet.SlimUNet2DModel`) as a
:class:`~ddsm.nn.backbone.Backbone` (registered as ``diffusers_unet``): its
``config`` is the :class:`~ddsm.config.DiffusersModelConfig` (the model's own
``config.json``), and its shapes, valid resolutions and memory estimate come
from that architecture. So a slimmed model is sampled, costed, searched and
exported by the same code as a supernet ddsm trained itself.

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

from ddsm.config import DiffusersModelConfig, ModelConfig
from ddsm.errors import DDSMError
from ddsm.nn.autoencoder import LatentCodec
from ddsm.nn.backbone import NoFeatureReuse, check_width_of, class_labels, divisor_sides, unet_forward_bytes
from ddsm.nn.diffusers_unet import SlimUNet2DModel, attention_sides
from ddsm.nn.slimmable import freeze_width


class _DiffusersShapes(NoFeatureReuse):
    """What samplers, the cost model and the memory guard read, computed from the diffusers ``config``."""

    config: DiffusersModelConfig

    @property
    def image_size(self) -> int:
        return int(self.config.unet["sample_size"])

    @property
    def in_channels(self) -> int:
        return int(self.config.unet.get("in_channels", 3))

    @property
    def num_classes(self) -> int:
        """The model's classes: ``num_class_embeds``, less its null label when the last embedding is one."""
        return self.config.num_classes

    @property
    def has_null_label(self) -> bool:
        """Whether label ``num_classes`` (unconditional) exists: classifier-free guidance needs it."""
        return self.config.has_null_label

    def _labels(self, cond: Any, x: torch.Tensor) -> torch.Tensor | None:
        # the protocol's labels (None: the null label) as the diffusers model's class_labels
        if not self.has_null_label:
            if cond is None:
                raise DDSMError(f"this model has no null label (its {self.num_classes} class embeddings are all "
                                "classes): give class labels; guidance needs ddsm slim --null-label last")
            y = class_labels(cond, self.num_classes, x.shape[0], x.device)
            if (y == self.num_classes).any():
                raise DDSMError(f"class label {self.num_classes} is out of range; valid labels: "
                                f"0..{self.num_classes - 1} (this model has no null label)")
            return y
        return class_labels(cond, self.num_classes, x.shape[0], x.device)

    def resolution_step(self) -> int:
        """Sides must be multiples of the total downsampling, ``2 ** (blocks - 1)``."""
        return 2 ** (len(self.config.unet["block_out_channels"]) - 1)

    def valid_resolutions(self) -> list[int]:
        return divisor_sides(self.image_size, self.resolution_step())

    def forward_bytes(self, resolution: int, batch_size: int = 1) -> int:
        """Skips plus working maps per block (``layers_per_block + 3``), and the largest attention matrix."""
        u = self.config.unet
        return unet_forward_bytes(self.image_size, [int(c) for c in u["block_out_channels"]],
                                  u.get("layers_per_block", 2) + 3, attention_sides(u), resolution, batch_size)


class _AtWidth(_DiffusersShapes, nn.Module):
    """One width of a slimmed model as plain torch layers (for MAC counting and deployment); a fixed-width backbone."""

    def __init__(self, net: nn.Module, config: DiffusersModelConfig, width: float) -> None:
        super().__init__()
        self.net, self.config, self.width = net, config, width

    @property
    def widths(self) -> tuple[float, ...]:
        return (self.width,)

    def check_width(self, width: float) -> float:
        return check_width_of(self.widths, width, fixed=True)

    def set_active_width(self, width: float) -> "_AtWidth":
        self.check_width(width)
        return self

    def extract_subnet(self, width: float) -> "_AtWidth":
        self.check_width(width)
        return copy.deepcopy(self)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, *, cond: Any = None, return_hidden: bool = False):
        return self.net(x, t, class_labels=self._labels(cond, x), return_hidden=return_hidden)


class SlimmedUNet(_DiffusersShapes, nn.Module):
    """A diffusers UNet2DModel made a supernet (module docstring); ``forward(x, t) -> eps`` at the active width."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.diffusers is None:
            raise DDSMError("SlimmedUNet needs a model config with a diffusers section (ddsm slim writes one)")
        d = config.diffusers
        self.config = d
        self.widths = config.unet.widths
        self.net = SlimUNet2DModel(d.unet, widths=self.widths)
        self.original = SlimUNet2DModel(d.unet, widths=(1.0,)).requires_grad_(False) if d.freeze_full else None
        self.width = max(self.widths)
        # a latent pipeline's autoencoder, frozen: decodes every sample (ddsm.nn.backbone.to_images); else None
        self.codec = LatentCodec(d.autoencoder) if d.autoencoder is not None else None

    def check_width(self, width: float) -> float:
        """Return ``width`` as the supernet's own float, or raise naming the valid set."""
        return check_width_of(self.widths, width)

    def set_active_width(self, width: float) -> "SlimmedUNet":
        """Run at ``width`` (one of ``widths``) from now on."""
        self.width = self.check_width(width)
        self.net.set_active_width(self.width)
        return self

    def _net_at(self, width: float) -> SlimUNet2DModel:
        return self.original if self.original is not None and width == 1.0 else self.net

    def extract_subnet(self, width: float) -> _AtWidth:
        """A copy made of plain ``torch.nn`` layers at ``width``; this supernet's active width is untouched."""
        width = self.check_width(width)
        return _AtWidth(freeze_width(copy.deepcopy(self._net_at(width)), width), self.config, width)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, *, cond: Any = None, return_hidden: bool = False):
        """Predict ε from the noisy ``x`` (B, C, H, W) at timesteps ``t`` (scalar or (B,), may be fractional).

        ``cond`` is the model's class labels (None for an unconditional model);
        ``return_hidden`` also returns the last hidden map (``SlimUNet2DModel.forward``).
        """
        return self._net_at(self.width)(x, t, class_labels=self._labels(cond, x), return_hidden=return_hidden)
