"""A slimmable mirror of diffusers' ``DiTTransformer2DModel`` (Peebles & Xie's DiT, as diffusers ships it).

The mirror is built from diffusers' own modules, under diffusers' own names
(``pos_embed.proj``, ``transformer_blocks.N.norm1.emb...``, ``attn1.to_q``,
``ff.net.0.proj``, ``proj_out_1``, ...), so a user's weights load with
``strict=True`` and full width computes the original's function. Only the
forward is ddsm's: a width keeps a prefix of the attention heads and of the
MLP hidden units in every block (DyDiT's dimensions), as ddsm's own DiT does
(``ddsm.nn.dit``); the residual stream, the adaLN-Zero modulation, the patch
embedding and the output layer keep their size.

Per block, with conditioning c = embed(t) + embed(y) (each block has its own
embedder in diffusers' layout) and modulation (β₁, γ₁, α₁, β₂, γ₂, α₂) = Linear(SiLU(c)):

    h ← h + α₁ · Attn_k(LN(h) (1 + γ₁) + β₁)       the first k = heads(w) heads
    h ← h + α₂ · MLP_m(LN(h) (1 + γ₂) + β₂)        the first m = hidden(w) units

then the final adaLN layer (block 0's embedder, as diffusers does), the
linear decoder and unpatchify. Labels go straight to the class embedding
table: diffusers' ``LabelEmbedding`` would drop labels at random in training
mode from the global RNG, which ddsm's seeded label dropout replaces. Its
table has ``num_embeds_ada_norm + 1`` rows when trained for guidance, the
last being the null label, which is ddsm's convention (label ``num_classes``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddsm.errors import DDSMError
from ddsm.nn.backbone import check_width_of
from ddsm.nn.slimmable import active

#: DiTTransformer2DModel settings ddsm mirrors, per key (anything else is refused by name)
SUPPORTED = {
    "norm_type": ("ada_norm_zero",),
    "activation_fn": ("gelu-approximate", "gelu"),
    "upcast_attention": (False,),
    "norm_elementwise_affine": (False,),
}


def check_dit_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config without diffusers' private keys, or a one-line DDSMError naming a setting ddsm cannot mirror."""
    c = {k: v for k, v in config.items() if not k.startswith("_")}
    for key, valid in SUPPORTED.items():
        if key in c and c[key] not in valid:
            raise DDSMError(f"{key} {c[key]!r} is not supported yet; supported: {', '.join(map(repr, valid))}")
    if c.get("num_embeds_ada_norm") is None:
        raise DDSMError("num_embeds_ada_norm None is not supported: DiT's adaLN-Zero needs its timestep embedder")
    if float(c.get("dropout", 0.0)) != 0.0:
        raise DDSMError(f"dropout {c['dropout']!r} is not supported yet; supported: 0.0 (seeded training)")
    return c


class SlimDiTTransformer2DModel(nn.Module):
    """The slimmable mirror of a ``DiTTransformer2DModel`` config; ``forward(x, t, class_labels)`` -> its output."""

    def __init__(self, config: dict[str, Any], widths: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> None:
        super().__init__()
        from ddsm.integrations.diffusers import import_diffusers

        c = check_dit_config(config)
        original = import_diffusers().DiTTransformer2DModel(**c)
        self.config = c
        self.heads = original.config.num_attention_heads  # H at width 1
        self.head_dim = original.config.attention_head_dim  # d_h
        self.patch_size = original.config.patch_size  # p
        self.out_channels = original.out_channels  # 2 C for a model that learns its variance
        self.in_channels = original.config.in_channels
        self.approximate = "tanh" if original.config.activation_fn == "gelu-approximate" else "none"
        # diffusers' modules under diffusers' names: the state dict is the original's
        self.pos_embed = original.pos_embed
        self.transformer_blocks = original.transformer_blocks
        self.norm_out, self.proj_out_1, self.proj_out_2 = original.norm_out, original.proj_out_1, original.proj_out_2
        self.mlp_hidden = self.transformer_blocks[0].ff.net[0].proj.out_features
        self.widths = tuple(sorted(float(w) for w in widths))
        for w in self.widths:
            if active(self.heads, w) < 1 or active(self.mlp_hidden, w) < 1:
                raise DDSMError(f"width {w:g} keeps {active(self.heads, w)} of {self.heads} heads; choose widths "
                                f"that keep at least one head (>= {0.5 / self.heads:.3g})")
        self.width = self.widths[-1]

    @property
    def num_classes(self) -> int:
        """Class labels (the null label ``num_classes`` is the embedding table's last row when it has one)."""
        return int(self.config["num_embeds_ada_norm"])

    def set_active_width(self, width: float) -> None:
        """Run every block at ``width`` (one of ``widths``)."""
        self.width = self.check(width)

    @torch.no_grad()
    def freeze(self, width: float) -> "SlimDiTTransformer2DModel":
        """Keep only the weights ``width`` runs (its heads' q, k, v and output columns, its MLP units), in place:
        the mirror then runs that width alone, as plain layers of the smaller size."""
        k, m = active(self.heads, self.check(width)), active(self.mlp_hidden, width)
        n = k * self.head_dim

        def cut(lin: nn.Linear, rows: int | None = None, cols: int | None = None) -> None:
            lin.weight = nn.Parameter(lin.weight[:rows, :cols].clone(), requires_grad=lin.weight.requires_grad)
            if lin.bias is not None and rows is not None:
                lin.bias = nn.Parameter(lin.bias[:rows].clone(), requires_grad=lin.bias.requires_grad)
            lin.out_features, lin.in_features = lin.weight.shape

        for block in self.transformer_blocks:
            for lin in (block.attn1.to_q, block.attn1.to_k, block.attn1.to_v):
                cut(lin, rows=n)
            cut(block.attn1.to_out[0], cols=n)
            cut(block.ff.net[0].proj, rows=m)
            cut(block.ff.net[2], cols=m)
        self.heads, self.mlp_hidden, self.widths, self.width = k, m, (1.0,), 1.0
        return self

    def check(self, width: float) -> float:
        return check_width_of(self.widths, width)

    def _condition(self, embedder: nn.Module, t: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # c = embed(t) + embed(y), without LabelEmbedding's training-mode random drop (module docstring)
        c = embedder.timestep_embedder(embedder.time_proj(t).to(dtype))
        return c + embedder.class_embedder.embedding_table(y)

    def _attention(self, attn: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
        # the first k heads: their rows of q, k, v and their columns of the output projection
        n = k * self.head_dim
        B, T, _ = x.shape
        q, key, v = (F.linear(x, lin.weight[:n], None if lin.bias is None else lin.bias[:n])
                     .view(B, T, k, self.head_dim).transpose(1, 2) for lin in (attn.to_q, attn.to_k, attn.to_v))
        a = F.scaled_dot_product_attention(q, key, v).transpose(1, 2).reshape(B, T, n)
        out = attn.to_out[0]
        return F.linear(a, out.weight[:, :n], out.bias)

    def _mlp(self, ff: nn.Module, x: torch.Tensor, m: int) -> torch.Tensor:
        # the first m hidden units: rows of the first linear, columns of the second
        first, second = ff.net[0].proj, ff.net[2]
        hidden = F.gelu(F.linear(x, first.weight[:m], first.bias[:m]), approximate=self.approximate)
        return F.linear(hidden, second.weight[:, :m], second.bias)

    def _embed(self, x: torch.Tensor, t: torch.Tensor | float, class_labels: torch.Tensor | None):
        # (tokens with their position embedding, per-sample t, the token grid's rows and cols)
        if class_labels is None:
            raise DDSMError("a DiT takes class labels: give class_labels (the null label is num_classes)")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return self.pos_embed(x), t, x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size

    def _block(self, block: nn.Module, h: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # one adaLN-Zero block at the active width: its first k heads and m MLP units
        k, m = active(self.heads, self.width), active(self.mlp_hidden, self.width)
        c = self._condition(block.norm1.emb, t, y, h.dtype)
        shift1, scale1, gate1, shift2, scale2, gate2 = block.norm1.linear(F.silu(c)).chunk(6, dim=1)
        a = block.norm1.norm(h) * (1 + scale1[:, None]) + shift1[:, None]
        h = h + gate1[:, None] * self._attention(block.attn1, a, k)
        a = block.norm3(h) * (1 + scale2[:, None]) + shift2[:, None]
        return h + gate2[:, None] * self._mlp(block.ff, a, m)

    def _head(self, h: torch.Tensor, t: torch.Tensor, y: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        # the final adaptive norm, the linear decoder and unpatchify
        c = self._condition(self.transformer_blocks[0].norm1.emb, t, y, h.dtype)
        shift, scale = self.proj_out_1(F.silu(c)).chunk(2, dim=1)
        out = self.proj_out_2(self.norm_out(h) * (1 + scale[:, None]) + shift[:, None])
        p, C = self.patch_size, self.out_channels
        return out.reshape(-1, rows, cols, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(-1, C, rows * p, cols * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, class_labels: torch.Tensor | None = None, *,
                return_hidden: bool = False):
        """diffusers' ``DiTTransformer2DModel.forward(x, t, class_labels).sample`` at the active width.

        ``t``: scalar or (B,), may be fractional; ``class_labels`` (B,) are required (the null label is
        ``num_classes``). ``return_hidden`` also returns the last block's tokens as a map (B, D, H/p, W/p).
        """
        h, t, rows, cols = self._embed(x, t, class_labels)
        for block in self.transformer_blocks:
            h = self._block(block, h, t, class_labels)
        out = self._head(h, t, class_labels, rows, cols)
        if not return_hidden:
            return out
        return out, h.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)

    def forward_reuse(self, x: torch.Tensor, t: torch.Tensor | float, class_labels: torch.Tensor, *, level: int,
                      deep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, the residual blocks ``level``..depth-level-1 add): a full call that also returns it (``deep``
        None), or a cached call that adds ``deep`` in their place (FORA / Δ-DiT; as ddsm's own DiT)."""
        h, t, rows, cols = self._embed(x, t, class_labels)
        blocks, L = self.transformer_blocks, level
        for block in blocks[:L]:
            h = self._block(block, h, t, class_labels)
        if deep is None:
            start = h
            for block in blocks[L: len(blocks) - L]:
                h = self._block(block, h, t, class_labels)
            deep = h - start
        else:
            h = h + deep
        for block in blocks[len(blocks) - L:]:
            h = self._block(block, h, t, class_labels)
        return self._head(h, t, class_labels, rows, cols), deep
