"""Exact channel reordering of a slimmed diffusers UNet, residual streams and skips included.

A slimmable net keeps a prefix of every layer's channels, so the order of the
channels decides what a narrow width keeps. :func:`permute_by_importance`
reorders the channels of :class:`~ddsm.nn.diffusers_unet.SlimUNet2DModel`
so that each prefix holds the channels whose producing weights have the
largest L2 norm, while the full-width function stays exactly the same
(permutation symmetry of a network, as in Entezari et al., "The Role of
Permutation Invariance in Linear Mode Connectivity", 2022, used here only to
sort).

The net is read as a graph of *channel spaces*: one space per tensor whose
channels must be permuted together. A space is produced by one or more
layers (a convolution's output rows, plus every layer added onto it through
an identity shortcut or an attention residual) and read by layers that
follow it, including, for a skip, the up-path ResNet that concatenates it.
Each space gets one permutation, applied to every weight that touches it.

What may move, exactly:

- GroupNorm: a permutation must map its groups onto groups. A space read by
  several GroupNorms (a skip is normalised with one group size in the down
  path and, at another offset, inside an up-path concatenation) must respect
  all of them: its *units* are the smallest runs of channels that no group
  of any of those norms straddles, and two units may swap only when they
  have the same length and the same group boundaries inside. Within a unit,
  channels are sorted inside the cells that every norm's groups agree on.
- Attention: q, k and v share one space (heads move whole, channels move
  within a head identically for q, k and v); the output projection's rows are
  the residual stream's.

What stays fixed: where the group sizes of the norms reading a space never
line up (a space whose only unit is the whole space) no channel crosses a
group, so only the within-group order changes, which keeps the set of
channels a narrow prefix holds; the returned report says, per space, how
many units could move. The time embedding is full width at every width and
is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ddsm.errors import DDSMError

__all__ = ["ChannelSpace", "constrained_order", "permute_by_importance"]

CRITERIA = ("weight_norm",)


# ---------------------------------------------------------------------------- the order within constraints


def _cuts(size: int, unit: int, offset: int) -> set[int]:
    """Positions 1..size-1 of a space where groups of ``unit`` (starting ``offset`` channels earlier) begin."""
    return {p for p in range(1, size) if (p + offset) % unit == 0}


def constrained_order(importance: torch.Tensor, groupings: list[tuple[int, int]]) -> torch.Tensor:
    """The permutation (new position -> old channel) sorting ``importance`` within the groupings' symmetry.

    ``groupings`` are ``(group_size, offset)`` pairs: a GroupNorm over a
    tensor in which this space starts ``offset`` channels in. The result maps
    every grouping's groups onto its groups, puts the most important of
    interchangeable units first, and sorts channels within each cell that no
    grouping cuts.
    """
    size = importance.numel()
    every = set(range(1, size))
    per = [_cuts(size, unit, offset) for unit, offset in groupings]
    join = set.intersection(every, *per) if per else every  # unit boundaries: cut by every grouping
    meet = set.union(set(), *per) if per else every  # cell boundaries: cut by some grouping
    bounds = [0, *sorted(join), size]
    units = list(zip(bounds[:-1], bounds[1:]))

    def signature(a: int, b: int) -> tuple:
        return (b - a, tuple(tuple(sorted(p - a for p in cuts if a < p < b)) for cuts in per))

    score = importance.double().pow(2)
    placed: dict[int, tuple[int, int]] = {}  # unit position -> the unit moved there
    for sig in dict.fromkeys(signature(a, b) for a, b in units):
        same = [u for u in units if signature(*u) == sig]
        ranked = sorted(same, key=lambda u: -float(score[u[0]:u[1]].sum()))  # stable: ties keep their order
        placed.update({slot[0]: unit for slot, unit in zip(same, ranked)})
    order: list[int] = []
    for a, _ in units:
        ua, ub = placed[a]
        cells = [ua, *sorted(p for p in meet if ua < p < ub), ub]
        for ca, cb in zip(cells[:-1], cells[1:]):
            order += (ca + torch.argsort(-score[ca:cb], stable=True)).tolist()
    return torch.tensor(order, dtype=torch.long)


# ---------------------------------------------------------------------------- the channel graph


@dataclass
class _Use:
    name: str  # parameter name, for the report
    param: torch.Tensor
    dim: int  # the channel dimension
    offset: int  # where this space starts along it (concatenations)
    produces: bool  # output rows of a layer writing into the space: counted in its importance


@dataclass
class ChannelSpace:
    """One reordered channel space: the layers writing it, its size, movable units and permutation."""

    producers: tuple[str, ...]  # parameter names whose output rows make the space
    channels: int  # channels at width 1
    units: int  # runs of channels that can swap places (1: only within-group order may change)
    perm: torch.Tensor  # new position -> old channel
    groupings: list[tuple[int, int]] = field(default_factory=list)  # (group size, offset) of each GroupNorm read


class _Graph:
    """Channel spaces joined by residual adds (union-find), with every weight slice that touches them."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.uses: list[_Use] = []
        self.use_space: list[int] = []
        self.groupings: list[tuple[int, int, int]] = []  # (space, group size, offset)

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> int:
        if self.size[a] != self.size[b]:
            raise RuntimeError(f"residual add of {self.size[a]} and {self.size[b]} channels")
        self.parent[self.find(a)] = self.find(b)
        return b

    def use(self, name: str, param: torch.Tensor, dim: int, segments: list[int], produces: bool = False) -> None:
        if not segments:  # an input that never slims (the image, the full-width time embedding)
            return
        offset = 0
        for s in segments:
            self.uses.append(_Use(name, param, dim, offset, produces))
            self.use_space.append(s)
            offset += self.size[s]
        if offset != param.shape[dim]:
            raise RuntimeError(f"{name}: {offset} channels traced, {param.shape[dim]} in the weight")

    def norm(self, name: str, gn: nn.Module, segments: list[int]) -> None:
        self.use(f"{name}.weight", gn.weight, 0, segments)
        self.use(f"{name}.bias", gn.bias, 0, segments)
        offset = 0
        for s in segments:
            self.groupings.append((s, gn.group_channels, offset))
            offset += self.size[s]

    def layer(self, name: str, m: nn.Module, segments: list[int], out: int | None = None) -> int:
        """A conv or linear reading ``segments`` (none: a fixed input), writing ``out`` (a new space unless given)."""
        out = self.new(m.weight.shape[0]) if out is None else out
        self.use(f"{name}.weight", m.weight, 1, segments)
        self.use(f"{name}.weight", m.weight, 0, [out], produces=True)
        self.use(f"{name}.bias", m.bias, 0, [out])
        return out


def _resnet(g: _Graph, name: str, r: nn.Module, x: list[int]) -> int:
    g.norm(f"{name}.norm1", r.norm1, x)
    h = g.layer(f"{name}.conv1", r.conv1, x)
    g.layer(f"{name}.time_emb_proj", r.time_emb_proj, [], out=h)  # reads the full-width time embedding
    g.norm(f"{name}.norm2", r.norm2, [h])
    y = g.layer(f"{name}.conv2", r.conv2, [h])
    if r.conv_shortcut is not None:
        g.layer(f"{name}.conv_shortcut", r.conv_shortcut, x, out=y)
        return y
    if len(x) != 1:
        raise RuntimeError(f"{name}: identity shortcut over a concatenation")
    return g.union(y, x[0])


def _attention(g: _Graph, name: str, a: nn.Module, x: int) -> int:
    g.norm(f"{name}.group_norm", a.group_norm, [x])
    qkv = g.new(a.to_q.weight.shape[0])
    for part in ("to_q", "to_k", "to_v"):
        g.layer(f"{name}.{part}", getattr(a, part), [x], out=qkv)
    # Heads map onto heads: the same "groups may only move whole" rule as a GroupNorm's.
    g.groupings.append((qkv, a.head_dim, 0))
    out = g.layer(f"{name}.to_out.0", a.to_out[0], [qkv])
    return g.union(out, x)


def _trace(net: nn.Module) -> _Graph:
    """Walk the net in forward order, recording every space and coupling."""
    g = _Graph()
    s = g.layer("conv_in", net.conv_in, [])
    skips = [s]
    for i, block in enumerate(net.down_blocks):
        for j, r in enumerate(block.resnets):
            s = _resnet(g, f"down_blocks.{i}.resnets.{j}", r, [s])
            if block.attentions is not None:
                s = _attention(g, f"down_blocks.{i}.attentions.{j}", block.attentions[j], s)
            skips.append(s)
        if block.downsamplers is not None:
            s = g.layer(f"down_blocks.{i}.downsamplers.0.conv", block.downsamplers[0].conv, [s])
            skips.append(s)
    mid = getattr(net, "mid_block", None)
    if mid is not None:
        s = _resnet(g, "mid_block.resnets.0", mid.resnets[0], [s])
        if mid.attentions is not None:
            s = _attention(g, "mid_block.attentions.0", mid.attentions[0], s)
        s = _resnet(g, "mid_block.resnets.1", mid.resnets[1], [s])
    for i, block in enumerate(net.up_blocks):
        for j, r in enumerate(block.resnets):
            s = _resnet(g, f"up_blocks.{i}.resnets.{j}", r, [s, skips.pop()])
            if block.attentions is not None:
                s = _attention(g, f"up_blocks.{i}.attentions.{j}", block.attentions[j], s)
        if block.upsamplers is not None:
            s = g.layer(f"up_blocks.{i}.upsamplers.0.conv", block.upsamplers[0].conv, [s])
    g.norm("conv_norm_out", net.conv_norm_out, [s])
    g.use("conv_out.weight", net.conv_out.weight, 1, [s])  # its output is the image: never permuted
    if skips:
        raise RuntimeError(f"{len(skips)} skips left unconsumed")
    return g


# ---------------------------------------------------------------------------- public


@torch.no_grad()
def permute_by_importance(net: nn.Module, criterion: str = "weight_norm") -> list[ChannelSpace]:
    """Reorder ``net``'s channels in place so narrow prefixes keep the strongest ones; width 1 is unchanged.

    ``net`` is a :class:`~ddsm.nn.diffusers_unet.SlimUNet2DModel`.
    ``criterion`` ``"weight_norm"``: a channel's importance is the L2 norm of
    every weight row that writes it (all producers of a residual stream
    together). Every coupling is permuted consistently (module docstring):
    residual adds, skip concatenations, attention q/k/v/out and GroupNorm
    groups, so the full-width function is the same up to float rounding.
    Returns one :class:`ChannelSpace` per space, in the order first met.
    """
    if criterion not in CRITERIA:
        raise DDSMError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    for attr in ("conv_in", "down_blocks", "up_blocks", "conv_norm_out", "conv_out"):
        if not hasattr(net, attr):
            raise DDSMError(f"permute_by_importance needs a SlimUNet2DModel (ddsm.nn.diffusers_unet), "
                            f"got {type(net).__name__} without {attr!r}")
    g = _trace(net)
    roots = list(dict.fromkeys(g.find(s) for s in range(len(g.parent))))
    spaces: list[ChannelSpace] = []
    for root in roots:
        size = g.size[root]
        uses = [u for u, s in zip(g.uses, g.use_space) if g.find(s) == root]
        groupings = [(unit, off) for s, unit, off in g.groupings if g.find(s) == root]
        importance = torch.zeros(size, dtype=torch.float64)
        for u in uses:
            if u.produces:
                rows = u.param.narrow(u.dim, u.offset, size).transpose(0, u.dim).reshape(size, -1)
                importance += rows.double().pow(2).sum(1)
        perm = constrained_order(importance.sqrt(), groupings)
        for u in uses:  # each (param, dim, offset) slice is reordered once
            idx = torch.arange(u.param.shape[u.dim])
            idx[u.offset:u.offset + size] = u.offset + perm
            u.param.copy_(u.param.index_select(u.dim, idx.to(u.param.device)))
        every = set(range(1, size))
        join = set.intersection(every, *[_cuts(size, a, b) for a, b in groupings]) if groupings else every
        spaces.append(ChannelSpace(producers=tuple(dict.fromkeys(u.name for u in uses if u.produces)),
                                   channels=size, units=len(join) + 1, perm=perm, groupings=groupings))
    return spaces
