"""The slimmable diffusion transformer (DiT) supernet, read top-down: primitives, blocks, model.

Architecture after Peebles & Xie, "Scalable Diffusion Models with
Transformers" (2023): the image is cut into p x p patches, each a token of
width d with a fixed 2-D sin-cos position embedding; N adaLN-Zero blocks
(LayerNorm whose shift, scale and residual gate are regressed from the
conditioning c = embedding of t + embedding of the class label) run
self-attention and an MLP over the tokens; a final adaLN layer maps every
token back to its p x p patch of ε. Only ε is predicted (no learned variance).

Slimming after DyDiT (Zhao et al., "Dynamic Diffusion Transformer", 2024),
which slims the same dimensions: at width w every block keeps the first
``heads(w)`` attention heads (their rows of q, k and v, their columns of the
output projection) and the first ``round(w * mlp_hidden)`` MLP hidden units.
The residual stream d is *not* sliced, and neither are the patch, time and
label embeddings, the adaLN modulations and the final layer: every head and
every MLP unit reads from and writes into the whole residual stream, and the
modulation (shift, scale, gate over d channels) is shared by all of them, so
cutting d would change what every remaining head sees rather than drop some.
A narrow DiT therefore saves MACs in attention and MLP (almost all of them)
while its token width stays d.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddsm.config import DiTConfig
from ddsm.errors import DDSMError
from ddsm.nn.backbone import check_reuse_level, class_labels
from ddsm.nn.slimmable import SlimLinear, SlimmableNetwork, SlimModule, active
from ddsm.nn.unet import timestep_embedding

#: size of the sinusoidal frequency embedding of t fed to the timestep MLP (DiT's choice)
FREQUENCY_DIM = 256

# ---------------------------------------------------------------------------- primitives


def pos_embed_2d(d: int, rows: int, cols: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (rows * cols, d) of a token grid, rows first (row-major).

    The first d/2 channels encode a token's column, the last d/2 its row, each
    as DiT's 1-D table ``[sin(pos * ω), cos(pos * ω)]`` with ω = 10000^(-k / (d/4)).
    Positions are in units of the training grid (``grid = image_size / p``
    tokens per side) and mark the centre of the image region a token covers:
    on the training grid that is DiT's 0, 1, ..., grid - 1; on a coarser grid
    (a low-resolution state of a resolution schedule, the same image at fewer
    pixels) token i covers training tokens [i * grid / n, (i + 1) * grid / n),
    so the same place in the image gets the same code at every resolution.
    Computed in float64 numpy, so a traced forward (the MAC count) sees a constant.
    """
    omega = 1.0 / 10000.0 ** (np.arange(d // 4, dtype=np.float64) / (d // 4))

    def axis(n: int) -> np.ndarray:
        pos = (np.arange(n, dtype=np.float64) + 0.5) * (grid / n) - 0.5
        out = pos[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (n, d/2)

    col, row = axis(cols), axis(rows)
    emb = np.concatenate([np.tile(col, (rows, 1)), np.repeat(row, cols, axis=0)], axis=1)
    return torch.from_numpy(emb).float()


def dit_forward_bytes(c, resolution: int, batch_size: int = 1) -> int:
    """Peak float32 activations of one DiT forward of geometry ``c`` (a DiTConfig) at width 1 (SlimDiT.forward_bytes)."""
    T = max(resolution // c.patch_size, 1) ** 2
    per_image = (T * (6 * c.hidden_size + 2 * c.mlp_hidden) + 2 * c.num_heads * T * T
                 + 2 * c.in_channels * resolution * resolution)
    return 4 * max(batch_size, 1) * per_image


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: per-sample affine of normalised tokens ``x`` (B, T, d); scale is around 1 so zero-init is identity."""
    return x * (1 + scale[:, None]) + shift[:, None]


class SlimQKV(SlimModule):
    """The q, k, v projection d -> 3d keeping the first heads of each of q, k and v.

    Rows [0, d) are q, [d, 2d) k, [2d, 3d) v, head after head within each;
    at ``heads`` active heads the kept rows are the first ``heads * dh`` of
    each third (a prefix of the whole 3d rows would keep all of q and none of
    v). The input (the residual stream) is never sliced. The output is
    [q, k, v] of ``heads * dh`` each, so callers read the head count off it.
    """

    def __init__(
        self,
        d: int,  # residual-stream width (input, and each of q, k, v at width 1)
        num_heads: int,  # heads at width 1
    ) -> None:
        super().__init__()
        self.d, self.num_heads, self.head_dim = d, num_heads, d // num_heads
        proto = nn.Linear(d, 3 * d)
        self.weight = nn.Parameter(proto.weight.detach().clone())
        self.bias = nn.Parameter(proto.bias.detach().clone())

    def _sliced(self, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = heads * self.head_dim
        return (self.weight.view(3, self.d, self.d)[:, :n].reshape(3 * n, self.d),
                self.bias.view(3, self.d)[:, :n].reshape(3 * n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = active(self.num_heads, self.width)
        weight, bias = self._cached((heads,), lambda: self._sliced(heads))
        return F.linear(x, weight, bias)

    def to_static(self) -> nn.Linear:
        weight, bias = self._sliced(active(self.num_heads, self.width))
        lin = nn.Linear(self.d, weight.shape[0])
        lin.weight.data.copy_(weight.detach())
        lin.bias.data.copy_(bias.detach())
        return lin


class SlimInputLinear(SlimModule):
    """Linear layer whose input is a prefix of its width-1 input and whose output keeps its full size.

    The layers that write back into the residual stream (attention output
    projection, second MLP layer): the kept input columns are read off the
    incoming tensor, in whole ``unit``s (one head of dh channels, or one MLP unit).
    """

    def __init__(
        self,
        in_features: int,  # input features at width 1
        out_features: int,  # output features, at every width
        unit: int = 1,  # input features are kept in whole groups of this size (dh for heads)
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.unit = in_features, out_features, unit
        proto = nn.Linear(in_features, out_features)
        self.weight = nn.Parameter(proto.weight.detach().clone())
        self.bias = nn.Parameter(proto.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_in = x.shape[-1]
        weight, bias = self._cached((c_in,), lambda: (self.weight[:, :c_in], self.bias))
        return F.linear(x, weight, bias)

    def to_static(self) -> nn.Linear:
        c_in = active(self.in_features // self.unit, self.width) * self.unit
        lin = nn.Linear(c_in, self.out_features)
        lin.weight.data.copy_(self.weight[:, :c_in].detach())
        lin.bias.data.copy_(self.bias.detach())
        return lin


# ---------------------------------------------------------------------------- blocks


class TimestepEmbedder(nn.Module):
    """Sinusoidal frequencies of (possibly fractional) t, then Linear-SiLU-Linear to d."""

    def __init__(self, d: int) -> None:  # residual-stream width
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_DIM, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, FREQUENCY_DIM))


class Attention(nn.Module):
    """Multi-head self-attention over all tokens; the active heads are those ``qkv`` keeps."""

    def __init__(
        self,
        d: int,  # residual-stream width
        num_heads: int,  # heads at width 1
    ) -> None:
        super().__init__()
        self.head_dim = d // num_heads
        self.qkv = SlimQKV(d, num_heads)
        self.proj = SlimInputLinear(d, d, unit=self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.qkv(x)
        # The head count follows from the output, so the frozen (plain nn.Linear) subnet needs no width.
        h = qkv.shape[-1] // (3 * self.head_dim)
        q, k, v = qkv.reshape(B, T, 3, h, self.head_dim).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, dh)
        return self.proj(a.transpose(1, 2).reshape(B, T, h * self.head_dim))


class Mlp(nn.Module):
    """Linear d -> units, GELU (tanh approximation), Linear units -> d; the active units are a prefix."""

    def __init__(
        self,
        d: int,  # residual-stream width
        hidden: int,  # MLP hidden units at width 1
    ) -> None:
        super().__init__()
        self.fc1 = SlimLinear(d, hidden, fixed_in=True)
        self.fc2 = SlimInputLinear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: each residual branch is normalised, modulated by c and gated by c."""

    def __init__(
        self,
        d: int,  # residual-stream width
        num_heads: int,  # attention heads at width 1
        mlp_hidden: int,  # MLP hidden units at width 1
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, num_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(d, mlp_hidden)
        # shift, scale, gate for attention, then for the MLP; zero-initialised so the block starts as identity
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN LayerNorm, then a Linear from every token to its p x p x C patch of ε."""

    def __init__(
        self,
        d: int,  # residual-stream width
        p: int,  # patch side
        out_channels: int,  # ε channels
    ) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(d, p * p * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ---------------------------------------------------------------------------- model


class SlimDiT(SlimmableNetwork):
    """ε-prediction DiT whose blocks can run at any width in ``config.widths`` (a :class:`~ddsm.nn.backbone.Backbone`).

    ``set_active_width(w)`` is the only way the width changes; ``extract_subnet(w)``
    returns a plain-``torch.nn`` copy at one width with identical outputs.
    ``cond`` is a LongTensor (B,) of class labels on a conditional model
    (``num_classes > 0``), where the label ``num_classes`` is the null label
    of classifier-free guidance and None means the null label for every sample.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        self.static_width: float | None = None
        self._width = 1.0
        d, p, C = config.hidden_size, config.patch_size, config.in_channels
        self._pos: dict[tuple, torch.Tensor] = {}  # position embeddings per (rows, cols, device): not state

        self.x_embedder = nn.Conv2d(C, d, kernel_size=p, stride=p)  # patchify: one token per p x p patch
        self.t_embedder = TimestepEmbedder(d)
        # one extra row, index num_classes, is the null label that classifier-free guidance samples with
        self.y_embedder = nn.Embedding(config.num_classes + 1, d) if config.num_classes > 0 else None
        self.blocks = nn.ModuleList([DiTBlock(d, config.num_heads, config.mlp_hidden) for _ in range(config.depth)])
        self.final_layer = FinalLayer(d, p, C)
        self._initialise()

    def _initialise(self) -> None:
        """DiT's initialisation: xavier linears, small embeddings, zero adaLN and output (each block starts as identity)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, SlimLinear, SlimQKV, SlimInputLinear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # the patch embedding is a linear map of the flattened p x p x C patch
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        for mod in [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1],
                                                                    self.final_layer.linear]:
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)

    # -- shapes (widths, set_active_width, extract_subnet, image_size, ...: SlimmableNetwork's) ---------------

    def resolution_step(self) -> int:
        """Sides must be whole numbers of patches: multiples of ``patch_size``."""
        return self.config.patch_size

    def valid_resolutions(self) -> list[int]:
        return self.config.valid_resolutions()

    def forward_bytes(self, resolution: int, batch_size: int = 1) -> int:
        """Peak float32 activations of one forward at width 1, per the estimate below, times the batch.

        With T = (resolution / p)^2 tokens, m MLP units and H heads, per image:
        the residual stream, its normalised and modulated copies, q, k, v and the
        attention output (6 T d); the MLP hidden map before and after GELU
        (2 T m); the score matrix and its softmax, which the math SDPA kernel
        (the one the MAC count pins) materialises (2 H T^2); and the image in
        and ε out (2 C resolution^2). Attention and MLP maps are counted as live
        together, which overstates the peak a little: the guard errs safe.
        """
        return dit_forward_bytes(self.config, resolution, batch_size)

    # -- forward -------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise DDSMError(f"this DiT takes images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        sides = self.valid_resolutions()
        if x.shape[-2] not in sides or x.shape[-1] not in sides:
            raise DDSMError(f"input side {x.shape[-2]}x{x.shape[-1]} is not one this DiT runs on; valid sides: "
                            f"{sides} (multiples of patch_size {self.config.patch_size} dividing image_size "
                            f"{self.image_size})")

    def _labels(self, cond: Any, batch: int, device: torch.device) -> torch.Tensor | None:
        """The label per sample (the null label where ``cond`` is None), or None on an unconditional model."""
        return class_labels(cond, self.config.num_classes, batch, device)

    def _pos_embed(self, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        key = (rows, cols, str(device))
        if key not in self._pos:
            grid = self.image_size // self.config.patch_size
            self._pos[key] = pos_embed_2d(self.config.hidden_size, rows, cols, grid).to(device)
        return self._pos[key]

    def unpatchify(self, tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """(B, T, p*p*C) patches, row-major, to the image (B, C, rows*p, cols*p)."""
        B, p, C = tokens.shape[0], self.config.patch_size, self.in_channels
        x = tokens.reshape(B, rows, cols, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, C, rows * p, cols * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, *, cond: Any = None, return_hidden: bool = False):
        """Predict ε from the noisy ``x`` (B, C, H, W) at timesteps ``t`` (scalar or (B,), may be fractional).

        ``cond``: class labels (B,) of a conditional model, None for the null
        label; must be None on an unconditional one. ``return_hidden`` also
        returns the last block's tokens as a map (B, d, H/p, W/p), before the
        final layer, which distillation matches between a student and its teacher.
        """
        h, c, rows, cols = self._embed(x, t, cond)
        for block in self.blocks:
            h = block(h, c)
        eps = self.unpatchify(self.final_layer(h, c), rows, cols)
        if not return_hidden:
            return eps
        return eps, h.transpose(1, 2).reshape(x.shape[0], self.config.hidden_size, rows, cols)

    def reuse_levels(self) -> tuple[int, ...]:
        """Levels L = 0..(depth-1)//2: a cached call runs the first L and the last L blocks and adds the residual
        that the middle blocks added at the last full call (FORA / Δ-DiT); the residual stream keeps its size at
        every width, so a residual from any width fits."""
        return tuple(range((self.config.depth - 1) // 2 + 1))

    def forward_reuse(self, x: torch.Tensor, t: torch.Tensor | float, *, level: int, deep: torch.Tensor | None,
                      cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε, the middle blocks' residual (B, T, d)): a full call that also returns it (``deep`` None), or a
        cached call that adds ``deep`` in place of blocks ``level``..depth-level-1."""
        L = check_reuse_level(self, level)
        h, c, rows, cols = self._embed(x, t, cond)
        for block in self.blocks[:L]:
            h = block(h, c)
        if deep is None:
            start = h
            for block in self.blocks[L: len(self.blocks) - L]:
                h = block(h, c)
            deep = h - start
        else:
            h = h + deep
        for block in self.blocks[len(self.blocks) - L:]:
            h = block(h, c)
        return self.unpatchify(self.final_layer(h, c), rows, cols), deep

    def _embed(self, x: torch.Tensor, t: torch.Tensor | float, cond: Any):
        # tokens with position embedding, the conditioning c = t + label embedding, and the token grid
        self._check_input(x)
        B, p = x.shape[0], self.config.patch_size
        rows, cols = int(x.shape[-2]) // p, int(x.shape[-1]) // p
        y = self._labels(cond, B, x.device)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(B)
        h = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, T, d), tokens row-major
        h = h + self._pos_embed(rows, cols, x.device).to(h.dtype)
        c = self.t_embedder(t)
        if y is not None:
            c = c + self.y_embedder(y)
        return h, c, rows, cols
