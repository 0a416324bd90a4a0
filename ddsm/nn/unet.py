"""The slimmable UNet supernet, read top-down: primitives, blocks, model.

Architecture after Ho et al., "Denoising Diffusion Probabilistic Models"
(2020): residual blocks with GroupNorm, sinusoidal time embedding, self-attention
at chosen resolutions. Slimming after Yu et al., "Slimmable Neural Networks"
(2019) and Yang et al., "Denoising Diffusion Step-aware Models" (2024): every
width multiplier uses a prefix of the widest net's channels. The time-embedding
MLP stays at full width (it is tiny); each block slices its projection of it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from typing import Any

from ddsm.config import UNetConfig
from ddsm.diffusion.resolution import haar_dwt, haar_idwt
from ddsm.errors import DDSMError
from ddsm.nn.backbone import check_reuse_level, class_labels, fit_channels, unet_forward_bytes
from ddsm.nn.slimmable import SlimConv2d, SlimGroupNorm, SlimLinear, SlimmableNetwork, active

# ---------------------------------------------------------------------------- primitives


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps ``t`` of shape (B,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


# ---------------------------------------------------------------------------- blocks


class ResBlock(nn.Module):
    """GN-SiLU-conv twice, time embedding added in between, 1x1 skip when widths differ."""

    def __init__(
        self,
        in_channels: int,  # input channels at width 1
        out_channels: int,  # output channels at width 1
        temb_channels: int,  # full-width time-embedding size
        group_channels: int,  # GroupNorm channels per group
        dropout: float,  # dropout before the second conv
        in_splits: tuple[int, ...] | None = None,  # segments of a concatenated input (up path)
    ) -> None:
        super().__init__()
        self.norm1 = SlimGroupNorm(in_channels, group_channels)
        self.conv1 = SlimConv2d(in_channels, out_channels, 3, padding=1, in_splits=in_splits)
        self.temb_proj = SlimLinear(temb_channels, out_channels, fixed_in=True)
        self.norm2 = SlimGroupNorm(out_channels, group_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = SlimConv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            SlimConv2d(in_channels, out_channels, 1, in_splits=in_splits)
            if in_channels != out_channels or in_splits
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, residual."""

    def __init__(
        self,
        channels: int,  # channels at width 1
        group_channels: int,  # GroupNorm channels per group
    ) -> None:
        super().__init__()
        self.norm = SlimGroupNorm(channels, group_channels)
        self.q = SlimConv2d(channels, channels, 1)
        self.k = SlimConv2d(channels, channels, 1)
        self.v = SlimConv2d(channels, channels, 1)
        self.proj = SlimConv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(2, 3) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(a.transpose(2, 3).reshape(B, C, H, W))


class ConvDownsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:  # channels at width 1
        super().__init__()
        self.conv = SlimConv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AvgPoolDownsample(nn.Module):
    """2x2 average pooling (no parameters)."""

    def __init__(self, channels: int) -> None:  # unused; keeps the block signature
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2)


class NearestConvUpsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:  # channels at width 1
        super().__init__()
        self.conv = SlimConv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SubbandGate(nn.Module):
    """Gates in (0, 1) per Haar sub-band and channel, from the sub-bands' spatial means.

    The wavelet gating of Yang et al., "Diffusion Probabilistic Model Made
    Slim" (Spectral Diffusion, 2023): the features decide, at every step, how
    much of each frequency band passes. Input and output are sliced band by
    band with the width; the hidden layer keeps its width-1 size at every
    width (it is tiny, and a sliced hidden layer could vanish at narrow widths).
    """

    def __init__(self, channels: int) -> None:  # channels per sub-band at width 1
        super().__init__()
        bands = (channels,) * 4
        hidden = max(4, channels // 4)
        self.fc1 = SlimConv2d(4 * channels, hidden, 1, in_splits=bands, fixed_out=True)
        self.fc2 = SlimConv2d(hidden, 4 * channels, 1, out_splits=bands, fixed_in=True)
        # Start every gate at sigmoid(0) = 1/2: all bands pass equally until training says otherwise.
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        """Gates (B, 4, C, 1, 1) for sub-bands (B, 4, C, h, w)."""
        B, _, C = bands.shape[:3]
        pooled = bands.mean(dim=(-2, -1)).reshape(B, 4 * C, 1, 1)
        return torch.sigmoid(self.fc2(F.silu(self.fc1(pooled)))).reshape(B, 4, C, 1, 1)


def _check_even(x: torch.Tensor, block: str) -> None:
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise DDSMError(f"the {block} block needs a feature map with even sides, got {x.shape[-2]}x{x.shape[-1]}; "
                        "use an image size divisible by 2 ** (len(channel_mults) - 1)")


class WaveletGatedDownsample(nn.Module):
    """Orthonormal Haar DWT into LL, LH, HL, HH, each gated per channel, merged by a 1x1 convolution."""

    def __init__(self, channels: int) -> None:  # channels at width 1
        super().__init__()
        self.gate = SubbandGate(channels)
        self.merge = SlimConv2d(4 * channels, channels, 1, in_splits=(channels,) * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_even(x, "wavelet_gated down")
        bands = haar_dwt(x)
        bands = bands * self.gate(bands)
        B, _, C, h, w = bands.shape
        return self.merge(bands.reshape(B, 4 * C, h, w))


class WaveletGatedUpsample(nn.Module):
    """The mirror: a 1x1 convolution into four sub-bands, each gated per channel, then the inverse Haar DWT."""

    def __init__(self, channels: int) -> None:  # channels at width 1
        super().__init__()
        self.split = SlimConv2d(channels, 4 * channels, 1, out_splits=(channels,) * 4)
        self.gate = SubbandGate(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        bands = self.split(x).reshape(B, 4, C, h, w)
        return haar_idwt(bands * self.gate(bands))


# Down/up-sampling blocks are chosen by name so that other designs (e.g.
# wavelet-gated blocks) plug in without touching the UNet: register a class
# taking the width-1 channel count.
DOWN_BLOCKS: dict[str, Callable[[int], nn.Module]] = {
    "conv": ConvDownsample, "avgpool": AvgPoolDownsample, "wavelet_gated": WaveletGatedDownsample,
}
UP_BLOCKS: dict[str, Callable[[int], nn.Module]] = {
    "nearest_conv": NearestConvUpsample, "wavelet_gated": WaveletGatedUpsample,
}


# ---------------------------------------------------------------------------- model


class SlimUNet(SlimmableNetwork):
    """ε-prediction UNet whose every layer can run at any width in ``config.widths`` (a :class:`~ddsm.nn.backbone.Backbone`).

    ``set_active_width(w)`` is the only way the width changes; ``extract_subnet(w)``
    returns a plain-``torch.nn`` copy at one width with identical outputs.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.down_block not in DOWN_BLOCKS:
            raise DDSMError(f"unknown down_block {config.down_block!r}; valid: {sorted(DOWN_BLOCKS)}")
        if config.up_block not in UP_BLOCKS:
            raise DDSMError(f"unknown up_block {config.up_block!r}; valid: {sorted(UP_BLOCKS)}")
        self.config = config
        self.static_width: float | None = None
        self._width = 1.0
        gc, base = config.group_channels, config.base_channels
        temb = 4 * base
        ch = [base * m for m in config.channel_mults]
        n_levels = len(ch)

        self.temb_mlp = nn.Sequential(nn.Linear(base, temb), nn.SiLU(), nn.Linear(temb, temb))
        # a conditional UNet adds its label's embedding to the time embedding (DDPM/ADM style); one extra row, index
        # num_classes, is the null label classifier-free guidance samples with. Not sliced: temb is full width.
        self.label_emb = nn.Embedding(config.num_classes + 1, temb) if config.num_classes else None
        self.conv_in = SlimConv2d(config.in_channels, base, 3, padding=1, fixed_in=True)

        # Down path: remember the channels of every feature map pushed as a skip.
        self.down = nn.ModuleList()
        skips, c, side = [base], base, config.image_size
        for i in range(n_levels):
            for _ in range(config.num_res_blocks):
                blocks = nn.ModuleList([ResBlock(c, ch[i], temb, gc, config.dropout)])
                c = ch[i]
                if side in config.attn_resolutions:
                    blocks.append(AttnBlock(c, gc))
                self.down.append(blocks)
                skips.append(c)
            if i < n_levels - 1:
                self.down.append(nn.ModuleList([DOWN_BLOCKS[config.down_block](c)]))
                skips.append(c)
                side //= 2

        self.mid = nn.ModuleList([ResBlock(c, c, temb, gc, config.dropout), AttnBlock(c, gc),
                                  ResBlock(c, c, temb, gc, config.dropout)])

        # Up path: each block consumes one skip, concatenated after the features.
        self.up = nn.ModuleList()
        for i in reversed(range(n_levels)):
            for _ in range(config.num_res_blocks + 1):
                s = skips.pop()
                blocks = nn.ModuleList([ResBlock(c + s, ch[i], temb, gc, config.dropout, in_splits=(c, s))])
                c = ch[i]
                if side in config.attn_resolutions:
                    blocks.append(AttnBlock(c, gc))
                self.up.append(blocks)
            if i > 0:
                self.up.append(nn.ModuleList([UP_BLOCKS[config.up_block](c)]))
                side *= 2

        # Feature reuse: level L keeps conv_in and the first L down-path blocks; the up-path ResBlock that pops skip L
        # is where the reused map enters. (up entry, its channels at width 1) per level.
        starts = [j for j, blocks in enumerate(self.up) if isinstance(blocks[0], ResBlock)]
        self._reuse_at = [(starts[len(self.down) - lvl], self.up[starts[len(self.down) - lvl]][0].conv1.in_splits[0])
                          for lvl in range(len(self.down) + 1)]
        self.norm_out = SlimGroupNorm(c, gc)
        self.conv_out = SlimConv2d(c, config.in_channels, 3, padding=1, fixed_out=True)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    # -- shapes (widths, set_active_width, extract_subnet, image_size, ...: SlimmableNetwork's) ---------------

    def resolution_step(self) -> int:
        """Sides must be multiples of the total downsampling, ``2 ** (levels - 1)``."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def valid_resolutions(self) -> list[int]:
        return self.config.valid_resolutions()

    def forward_bytes(self, resolution: int, batch_size: int = 1) -> int:
        """Skips plus two working maps per block level, and the largest attention score matrix."""
        c = self.config
        return unet_forward_bytes(c.image_size, [c.channels(i) for i in range(len(c.channel_mults))],
                                  c.num_res_blocks + 3, list(c.attn_resolutions), resolution, batch_size)

    # -- forward -------------------------------------------------------------

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, *, cond: Any = None, return_hidden: bool = False):
        """Predict ε from the noisy ``x`` (B, C, H, W) at timesteps ``t`` (scalar or (B,), may be fractional).

        ``cond``: class labels (B,) of a conditional UNet (``num_classes`` > 0;
        None: the null label), None for an unconditional one
        (:func:`~ddsm.nn.backbone.class_labels`). ``return_hidden`` also
        returns the last hidden feature map (after the output normalisation
        and activation, before ``conv_out``), which distillation matches
        between a student and its teacher.
        """
        temb = self._embed(x, t, cond)
        h, hs = self._down(x, temb, len(self.down))
        for b in self.mid:
            h = b(h, temb) if isinstance(b, ResBlock) else b(h)
        return self._up(h, hs, temb, 0, return_hidden)

    # -- feature reuse (DeepCache) -------------------------------------------------

    def reuse_levels(self) -> tuple[int, ...]:
        """Levels L = 0..(down-path blocks): a cached call runs ``conv_in``, the first L down-path blocks and the
        up-path blocks that read their skips; the map entering the up path there is reused (DeepCache's branch)."""
        return tuple(range(len(self._reuse_at)))

    def forward_reuse(self, x: torch.Tensor, t: torch.Tensor | float, *, level: int, deep: torch.Tensor | None,
                      cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε, the deep map at ``level``): a full call that also returns the map (``deep`` None), or a cached call
        that runs only the outer blocks and reads ``deep`` in place of everything below ``level``.

        The map is fitted to this call's width by its channel prefix: cut when it came from a wider call, padded
        with zeros (the channels a narrower call never computed) when from a narrower one.
        """
        entry, channels = self._reuse_at[check_reuse_level(self, level)]
        temb = self._embed(x, t, cond)
        if deep is None:
            h, hs = self._down(x, temb, len(self.down))
            for b in self.mid:
                h = b(h, temb) if isinstance(b, ResBlock) else b(h)
            h = self._up_to(h, hs, temb, entry)
            return self._up(h, hs, temb, entry, False), h
        _, hs = self._down(x, temb, level)
        deep = fit_channels(deep, active(channels, self.width))
        return self._up(deep, hs, temb, entry, False), deep

    # -- the three paths, shared by both forwards ---------------------------------------

    def _embed(self, x: torch.Tensor, t: torch.Tensor | float, cond: Any) -> torch.Tensor:
        y = class_labels(cond, self.config.num_classes, x.shape[0], x.device)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self.temb_mlp(timestep_embedding(t, self.config.base_channels))
        if y is not None:
            temb = temb + self.label_emb(y)
        return temb

    def _down(self, x: torch.Tensor, temb: torch.Tensor, stop: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # conv_in and the first ``stop`` down-path blocks; every map pushed as a skip
        h = self.conv_in(x)
        hs = [h]
        for blocks in self.down[:stop]:
            for b in blocks:
                h = b(h, temb) if isinstance(b, ResBlock) else b(h)
            hs.append(h)
        return h, hs

    def _up_to(self, h: torch.Tensor, hs: list[torch.Tensor], temb: torch.Tensor, stop: int) -> torch.Tensor:
        # the up-path blocks before entry ``stop`` (they pop the deepest skips off ``hs``)
        for blocks in self.up[:stop]:
            h = self._up_entry(blocks, h, hs, temb)
        return h

    def _up(self, h: torch.Tensor, hs: list[torch.Tensor], temb: torch.Tensor, start: int, return_hidden: bool):
        for blocks in self.up[start:]:
            h = self._up_entry(blocks, h, hs, temb)
        h = F.silu(self.norm_out(h))
        eps = self.conv_out(h)
        return (eps, h) if return_hidden else eps

    @staticmethod
    def _up_entry(blocks: nn.ModuleList, h: torch.Tensor, hs: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        for b in blocks:
            if isinstance(b, ResBlock):
                h = b(torch.cat([h, hs.pop()], dim=1), temb)
            else:
                h = b(h)
        return h
