"""A slimmed diffusers DiT as a ddsm supernet (registered as ``diffusers_dit``).

:class:`SlimmedDiT` wraps the slimmable mirror of a user's
``DiTTransformer2DModel`` (:class:`~ddsm.nn.diffusers_dit.SlimDiTTransformer2DModel`)
as a :class:`~ddsm.nn.backbone.Backbone`, as :class:`~ddsm.nn.slimmed.SlimmedUNet`
does for a UNet: with ``freeze_full`` (the default) ``original`` is the
user's weights untouched and runs width 1, ``net`` the shared weights of the
narrower widths that fine-tuning moves. Its geometry (image size, channels,
heads, widths, classes) is the model config's ``dit`` section, recorded from
the diffusers config, so the cost model, the memory guard and the search read
it as they read ddsm's own DiT.

The backbone outputs the ε (or v, x0) channels only: a DiT that learns its
variance (``out_channels`` = 2 C) predicts the variance in its last C
channels, which ddsm's samplers do not use (as diffusers' ``DiTPipeline``
splits them off).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ddsm.config import ModelConfig
from ddsm.errors import DDSMError
from ddsm.nn.autoencoder import LatentCodec
from ddsm.nn.backbone import GeometryFromConfig, check_reuse_level, check_width_of, class_labels
from ddsm.nn.diffusers_dit import SlimDiTTransformer2DModel
from ddsm.nn.dit import dit_forward_bytes


class SlimmedDiT(GeometryFromConfig, nn.Module):
    """A diffusers DiTTransformer2DModel made a supernet (module docstring); ``forward(x, t, cond=y) -> eps``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.diffusers is None or config.diffusers.transformer is None or config.dit is None:
            raise DDSMError("SlimmedDiT needs a model config with a diffusers transformer and its dit geometry "
                            "(ddsm slim writes both)")
        d = config.diffusers
        self.config = config.dit  # what the cost model, the memory guard and the search read
        self.diffusers_config = d
        self.widths = config.dit.widths
        self.net = SlimDiTTransformer2DModel(d.transformer, widths=self.widths)
        self.original = SlimDiTTransformer2DModel(d.transformer, widths=(1.0,)).requires_grad_(False) \
            if d.freeze_full else None
        self.width = max(self.widths)
        # a latent pipeline's autoencoder, frozen: decodes every sample (ddsm.nn.backbone.to_images); else None
        self.codec = LatentCodec(d.autoencoder) if d.autoencoder is not None else None

    # -- what samplers, the cost model and the memory guard read (image size, channels, classes: the dit section)

    def resolution_step(self) -> int:
        return self.config.patch_size

    def valid_resolutions(self) -> list[int]:
        return [self.config.image_size]  # diffusers' position embedding is fixed to its sample size

    def forward_bytes(self, resolution: int, batch_size: int = 1) -> int:
        """As ddsm's own DiT (:func:`ddsm.nn.dit.dit_forward_bytes`): residual stream, MLP and score maps."""
        return dit_forward_bytes(self.config, resolution, batch_size)

    # -- widths

    def check_width(self, width: float) -> float:
        """Return ``width`` as the supernet's own float, or raise naming the valid set."""
        return check_width_of(self.widths, width, fixed=len(self.widths) == 1)

    def set_active_width(self, width: float) -> "SlimmedDiT":
        """Run at ``width`` (one of ``widths``) from now on."""
        self.width = self.check_width(width)
        if len(self.net.widths) > 1 or self.net.widths[0] == self.width:  # a frozen extract runs its one width
            self.net.set_active_width(self.width)
        return self

    def _net_at(self, width: float) -> SlimDiTTransformer2DModel:
        return self.original if self.original is not None and width == 1.0 else self.net

    def extract_subnet(self, width: float) -> "SlimmedDiT":
        """A fixed-width copy holding only the weights ``width`` runs (smaller plain layers); this supernet's
        active width is untouched."""
        width = self.check_width(width)
        sub = copy.copy(self)  # nn.Module's shallow copy shares submodules: replace them below
        nn.Module.__init__(sub)
        sub.config, sub.diffusers_config, sub.widths, sub.width = self.config, self.diffusers_config, (width,), width
        sub.net = copy.deepcopy(self._net_at(width)).requires_grad_(False)
        sub.original, sub.codec = None, None  # the denoiser alone, as a UNet's extract
        if width != 1.0 or self.original is None:
            sub.net.freeze(width)
        return sub.eval()

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, *, cond: Any = None, return_hidden: bool = False):
        """Predict ε from the noisy ``x`` (B, C, H, W) at timesteps ``t`` (scalar or (B,), may be fractional);
        ``cond``: class labels (B,), None for the null label; ``return_hidden`` also returns the last block's
        tokens as a map."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise DDSMError(f"this DiT takes inputs of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        y = class_labels(cond, self.num_classes, x.shape[0], x.device)
        out = self._net_at(self.width)(x, t, y, return_hidden=return_hidden)
        if return_hidden:
            return out[0][:, : self.in_channels], out[1]
        return out[:, : self.in_channels]

    def reuse_levels(self) -> tuple[int, ...]:
        """Levels L = 0..(depth-1)//2, as ddsm's own DiT: a cached call runs the first L and the last L blocks and adds
        the residual the middle blocks added at the last full call; the residual stream keeps its size at every
        width (and in the frozen original), so a residual from any width fits."""
        return tuple(range((len(self.net.transformer_blocks) - 1) // 2 + 1))

    def forward_reuse(self, x: torch.Tensor, t: torch.Tensor | float, *, level: int, deep: torch.Tensor | None,
                      cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε, the middle blocks' residual): a full call that returns it too (``deep`` None), or a cached call."""
        level = check_reuse_level(self, level)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise DDSMError(f"this DiT takes inputs of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        y = class_labels(cond, self.num_classes, x.shape[0], x.device)
        out, deep = self._net_at(self.width).forward_reuse(x, t, y, level=level, deep=deep)
        return out[:, : self.in_channels], deep
