"""A slimmable mirror of diffusers' ``UNet2DModel``: the user's trained model becomes a supernet's widest net.

Every module is named exactly as diffusers names it, so the original state
dict loads unchanged (``load_state_dict(strict=True)``) and, at width 1, the
mirror computes the original function (tested to 1e-5 in fp32). At a
narrower width every internal layer keeps a prefix of its channels: the
image channels in and out and the time embedding never slim; GroupNorm keeps
its channels per group (``SlimGroupNorm``); attention keeps its head size and
drops heads. The narrow widths are not trained by the user: they start as
prefixes of the original and are fine-tuned by distillation from it.

Supported blocks (anything else is refused when the folder is read, see
``ddsm.integrations.diffusers_folder``): ``DownBlock2D``,
``AttnDownBlock2D``, ``UNetMidBlock2D``, ``UpBlock2D``, ``AttnUpBlock2D``,
with positional time embedding and an optional plain class embedding.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddsm.config import DEFAULT_WIDTHS
from ddsm.errors import DDSMError
from ddsm.nn.backbone import check_width_of
from ddsm.nn.slimmable import SlimConv2d, SlimGroupNorm, SlimLinear, active, set_active_width

# -- primitives ---------------------------------------------------------------------------------------------


def timestep_features(t: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                      max_period: float = 10000.0) -> torch.Tensor:
    """diffusers' sinusoidal timestep features (``get_timestep_embedding``), (B,) -> (B, dim)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift)
    arg = t[:, None].float() * torch.exp(exponent)[None]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """Linear-SiLU-linear on the timestep features, full width at every width (it conditions every block)."""

    def __init__(self, in_features: int, dim: int) -> None:  # features in; embedding size
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


# -- blocks ---------------------------------------------------------------------------------------------------


class ResnetBlock2D(nn.Module):
    """diffusers' ResnetBlock2D (time_embedding_norm 'default'), slimmable."""

    def __init__(
        self,
        in_channels: int,  # input channels at width 1 (sum of the segments if in_splits)
        out_channels: int,  # output channels at width 1
        temb_channels: int,  # time-embedding size (never slimmed)
        groups: int,  # GroupNorm groups at width 1
        eps: float,  # GroupNorm eps
        output_scale_factor: float = 1.0,  # (x + h) / factor, as diffusers
        in_splits: Sequence[int] | None = None,  # segments of a concatenated input (up path: hidden, skip)
    ) -> None:
        super().__init__()
        self.norm1 = SlimGroupNorm(in_channels, in_channels // groups, eps=eps)
        self.conv1 = SlimConv2d(in_channels, out_channels, 3, padding=1, in_splits=in_splits)
        self.time_emb_proj = SlimLinear(temb_channels, out_channels, fixed_in=True)
        self.norm2 = SlimGroupNorm(out_channels, out_channels // groups, eps=eps)
        self.conv2 = SlimConv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = SlimConv2d(in_channels, out_channels, 1, in_splits=in_splits) \
            if in_channels != out_channels else None
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return (skip + h) / self.output_scale_factor


class Attention(nn.Module):
    """diffusers' spatial self-attention of the UNet2D blocks (GroupNorm, q/k/v, out, residual), slimmable.

    The head size is fixed, so a narrow width keeps the first heads whole.
    """

    def __init__(
        self,
        channels: int,  # channels at width 1
        head_dim: int | None,  # channels per head, fixed across widths (None: one head as wide as the layer)
        groups: int,  # GroupNorm groups at width 1
        eps: float,  # GroupNorm eps
        rescale_output_factor: float = 1.0,  # output / factor, as diffusers
    ) -> None:
        super().__init__()
        self.head_dim, self.rescale_output_factor = head_dim, rescale_output_factor
        self.group_norm = SlimGroupNorm(channels, channels // groups, eps=eps)
        self.to_q = SlimLinear(channels, channels)
        self.to_k = SlimLinear(channels, channels)
        self.to_v = SlimLinear(channels, channels)
        self.to_out = nn.ModuleList([SlimLinear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        d = self.head_dim or C
        if C % d:
            raise DDSMError(f"{C} attention channels at this width do not form heads of {d}")
        h = self.group_norm(x).reshape(B, C, H * W).transpose(1, 2)
        q, k, v = (m(h).reshape(B, H * W, C // d, d).transpose(1, 2)
                   for m in (self.to_q, self.to_k, self.to_v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H * W, C)
        out = self.to_out[0](a).transpose(1, 2).reshape(B, C, H, W)
        return (out + x) / self.rescale_output_factor


class Downsample2D(nn.Module):
    """Stride-2 3x3 convolution (diffusers' ``downsamplers.0.conv``)."""

    def __init__(self, channels: int, padding: int = 1) -> None:  # channels at width 1; conv padding
        super().__init__()
        self.conv = SlimConv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest 2x, then a 3x3 convolution (diffusers' ``upsamplers.0.conv``)."""

    def __init__(self, channels: int) -> None:  # channels at width 1
        super().__init__()
        self.conv = SlimConv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """``DownBlock2D`` / ``AttnDownBlock2D``: resnets (each followed by attention in the Attn variant)."""

    def __init__(self, in_channels: int, out_channels: int, temb: int, layers: int, groups: int, eps: float,
                 attention: bool, head_dim: int, downsample: bool, padding: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb,
                                                    groups, eps) for i in range(layers)])
        self.attentions = nn.ModuleList([Attention(out_channels, head_dim, groups, eps) for _ in range(layers)]) \
            if attention else None
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding)]) if downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """``UpBlock2D`` / ``AttnUpBlock2D``: resnets on [hidden, skip] concatenations, then an upsampler."""

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb: int, layers: int,
                 groups: int, eps: float, attention: bool, head_dim: int, upsample: bool) -> None:
        super().__init__()
        resnets = []
        for i in range(layers):
            skip = in_channels if i == layers - 1 else out_channels
            hidden = prev_channels if i == 0 else out_channels
            resnets.append(ResnetBlock2D(hidden + skip, out_channels, temb, groups, eps, in_splits=(hidden, skip)))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList([Attention(out_channels, head_dim, groups, eps) for _ in range(layers)]) \
            if attention else None
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class MidBlock(nn.Module):
    """``UNetMidBlock2D``: resnet, then (attention, resnet) pairs."""

    def __init__(self, channels: int, temb: int, groups: int, attn_groups: int, eps: float, attention: bool,
                 head_dim: int, scale: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, groups, eps, scale) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(channels, head_dim, attn_groups, eps, scale)]) if attention else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)


def attention_sides(config: dict[str, Any]) -> list[int]:
    """The feature-map sides (at the model's ``sample_size``) whose down blocks carry attention."""
    size = config["sample_size"]
    return [size // 2**i for i, kind in enumerate(config.get("down_block_types", ())) if kind.startswith("Attn")]


# -- model ----------------------------------------------------------------------------------------------------


class SlimUNet2DModel(nn.Module):
    """The slimmable mirror of a ``UNet2DModel`` config (``config.json`` as a dict); ``forward(x, t) -> eps``."""

    def __init__(self, config: dict[str, Any], widths: Sequence[float] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        c = config
        ch = list(c["block_out_channels"])
        groups, eps, layers = c.get("norm_num_groups", 32), c.get("norm_eps", 1e-5), c.get("layers_per_block", 2)
        head = c.get("attention_head_dim", 8)
        temb = c.get("time_embedding_dim") or ch[0] * 4
        self.config, self.widths = dict(c), tuple(sorted(widths))
        for key, valid in (("downsample_padding", 1), ("center_input_sample", False), ("act_fn", "silu")):
            if c.get(key, valid) != valid:  # the folder check refuses these too; a config given directly is checked here
                raise DDSMError(f"{key} {c[key]!r} is not supported yet; supported: {valid!r}")
        self._check_widths(ch, groups, head)
        self.flip_sin_to_cos, self.freq_shift = c.get("flip_sin_to_cos", True), c.get("freq_shift", 0)
        self.time_features = ch[0]
        self.conv_in = SlimConv2d(c.get("in_channels", 3), ch[0], 3, padding=1, fixed_in=True)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        n_cls = c.get("num_class_embeds")
        self.class_embedding = nn.Embedding(n_cls, temb) if n_cls is not None else None
        down, out = [], ch[0]
        for i, kind in enumerate(c["down_block_types"]):
            prev, out = out, ch[i]
            down.append(DownBlock(prev, out, temb, layers, groups, eps, kind == "AttnDownBlock2D",
                                  head, i < len(ch) - 1, 1))
        self.down_blocks = nn.ModuleList(down)
        add_attention = c.get("add_attention", True)
        self.mid_block = None if c.get("mid_block_type", "UNetMidBlock2D") is None else \
            MidBlock(ch[-1], temb, groups, c.get("attn_norm_num_groups") or groups, eps, add_attention, head,
                     c.get("mid_block_scale_factor", 1.0))
        up, rev = [], list(reversed(ch))
        out = rev[0]
        for i, kind in enumerate(c["up_block_types"]):
            prev, out = out, rev[i]
            inp = rev[min(i + 1, len(ch) - 1)]
            up.append(UpBlock(inp, prev, out, temb, layers + 1, groups, eps, kind == "AttnUpBlock2D", head,
                              i < len(ch) - 1))
        self.up_blocks = nn.ModuleList(up)
        self.conv_norm_out = SlimGroupNorm(ch[0], ch[0] // groups, eps=eps)
        self.conv_out = SlimConv2d(ch[0], c.get("out_channels", 3), 3, padding=1, fixed_out=True)

    def _check_widths(self, ch: list[int], groups: int, head: int | None) -> None:
        for w in self.widths:
            for n in ch:
                kept = active(n, w)
                if kept == 0 or kept % (n // groups) or (head and kept % head):
                    raise DDSMError(f"width {w:g} keeps {kept} of {n} channels, which do not form GroupNorm groups of "
                                    f"{n // groups}" + (f" and heads of {head}" if head else "") +
                                    "; choose widths that keep whole groups and heads")

    def set_active_width(self, width: float) -> None:
        """Run every slimmable layer at ``width`` (one of ``widths``, matched as everywhere in ddsm)."""
        set_active_width(self, check_width_of(self.widths, width))

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, class_labels: torch.Tensor | None = None, *,
                cond: torch.Tensor | None = None, return_hidden: bool = False):
        """diffusers' ``UNet2DModel.forward(...).sample`` at the active width.

        ``cond`` is the backbone protocol's name for ``class_labels`` (give
        one of them). ``return_hidden`` also returns the last hidden map (after
        the output norm and activation, before ``conv_out``), as ddsm's own UNet does.
        """
        class_labels = cond if class_labels is None else class_labels
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        emb = self.time_embedding(timestep_features(t, self.time_features, self.flip_sin_to_cos, self.freq_shift))
        if self.class_embedding is not None:
            if class_labels is None:
                raise DDSMError("this model is class-conditional: give class_labels")
            emb = emb + self.class_embedding(class_labels)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, s = block(h, emb)
            skips.extend(s)
        if self.mid_block is not None:
            h = self.mid_block(h, emb)
        for block in self.up_blocks:
            h = block(h, skips, emb)
        h = F.silu(self.conv_norm_out(h))
        eps = self.conv_out(h)
        return (eps, h) if return_hidden else eps

