"""Slimmable primitives: every width is a slice of one max-size weight.

Following slimmable networks / Once-for-all, a layer stores the weights of the
widest net and, at width ``w``, uses the first ``round(w * C)`` output channels
(``W[:out, :in]``). The active width is set only through
:func:`set_active_width`; input width is read from the incoming tensor, except
for convolutions over a concatenation (UNet skips), whose input is several
sliced segments side by side and must be sliced segment by segment (and
convolutions whose output is several segments, such as the four wavelet
sub-bands of a wavelet-gated block, slice each output segment alone).

Every primitive can be frozen into the equivalent plain ``torch.nn`` layer
with :meth:`to_static`, which is how fixed-width subnets are extracted.

Sampling calls each layer hundreds of times at a handful of widths. Without
gradients, a layer therefore keeps its sliced weights as contiguous tensors,
one copy per width (at most 1 + 3/4² + 1/2² + 1/4² ≈ 1.9 times the weights
for the default widths): a strided slice sends a batch-1 convolution down a
slower kernel and a skip convolution's channel gather copies its weight on
every call. The cache is keyed by the weight's storage and version, so an
optimizer step, ``load_state_dict`` or ``.to(device)`` invalidates it; with
gradients on (training) nothing is cached. :func:`weight_cache` switches it
off, e.g. to measure what it saves.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator, Self, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddsm.nn.backbone import GeometryFromConfig, NoFeatureReuse

_CACHE_ON = [True]


@contextlib.contextmanager
def weight_cache(enabled: bool) -> Iterator[None]:
    """Turn the per-width cache of sliced weights on or off inside the block (on by default)."""
    before, _CACHE_ON[0] = _CACHE_ON[0], enabled
    try:
        yield
    finally:
        _CACHE_ON[0] = before


def active(channels: int, width: float) -> int:
    """Channels kept of ``channels`` at width multiplier ``width``."""
    return int(round(channels * width))


class SlimModule(nn.Module):
    """Mixin for layers whose output width follows the supernet's active width."""

    width: float = 1.0

    def to_static(self) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def _cached(self, key: tuple, make: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """``make()`` (sliced weights), kept contiguous per ``key`` while no gradient is recorded."""
        if torch.is_grad_enabled() or not _CACHE_ON[0]:
            return make()
        w, b = self.weight, self.bias
        key = (*key, w.data_ptr(), w._version, b.data_ptr(), b._version)
        cache = self.__dict__.setdefault("_slices", {})  # not a buffer: never saved, moved or counted
        hit = cache.get(key)
        if hit is None:
            # drop slices of older weights (same shape key, other storage or version)
            for k in [k for k in cache if k[: len(key) - 4] == key[:-4]]:
                del cache[k]
            hit = cache[key] = tuple(t.contiguous() for t in make())
        return hit


class SlimConv2d(SlimModule):
    """Conv2d over the first channels of a max-size kernel."""

    def __init__(
        self,
        in_channels: int,  # input channels at width 1 (sum of the segments if in_splits)
        out_channels: int,  # output channels at width 1
        kernel_size: int,  # square kernel side
        stride: int = 1,  # convolution stride
        padding: int = 0,  # zero padding per side
        *,
        in_splits: Sequence[int] | None = None,  # widths-1 sizes of concatenated input segments
        out_splits: Sequence[int] | None = None,  # widths-1 sizes of output segments, each sliced alone
        fixed_in: bool = False,  # input never slimmed (image channels)
        fixed_out: bool = False,  # output never slimmed (predicted noise)
    ) -> None:
        super().__init__()
        if in_splits is not None and sum(in_splits) != in_channels:
            raise ValueError(f"in_splits {list(in_splits)} do not sum to in_channels {in_channels}")
        if out_splits is not None and sum(out_splits) != out_channels:
            raise ValueError(f"out_splits {list(out_splits)} do not sum to out_channels {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.padding = stride, padding
        self.in_splits = tuple(in_splits) if in_splits is not None else None
        self.out_splits = tuple(out_splits) if out_splits is not None else None
        self.fixed_in, self.fixed_out = fixed_in, fixed_out
        proto = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.weight = nn.Parameter(proto.weight.detach().clone())
        self.bias = nn.Parameter(proto.bias.detach().clone())

    def _segments(self, splits: Sequence[int]) -> torch.Tensor:
        # The kept prefix of every segment, side by side.
        idx, offset = [], 0
        for seg in splits:
            idx.append(torch.arange(offset, offset + active(seg, self.width)))
            offset += seg
        return torch.cat(idx)

    def _in_index(self, c_in: int) -> slice | torch.Tensor:
        if self.fixed_in or self.in_splits is None:
            return slice(0, c_in)
        index = self._segments(self.in_splits)
        if index.numel() != c_in:
            raise RuntimeError(
                f"concatenated input has {c_in} channels but width {self.width} expects {index.numel()}"
            )
        return index

    def _sliced(self, c_in: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.out_splits is not None and not self.fixed_out:
            out = self._segments(self.out_splits)
            return self.weight[out][:, self._in_index(c_in)], self.bias[out]
        c_out = self.out_channels if self.fixed_out else active(self.out_channels, self.width)
        return self.weight[:c_out][:, self._in_index(c_in)], self.bias[:c_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_in = x.shape[1]
        weight, bias = self._cached((self.width, c_in), lambda: self._sliced(c_in))
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def to_static(self) -> nn.Conv2d:
        c_in = self.in_channels if self.fixed_in else (
            sum(active(s, self.width) for s in self.in_splits) if self.in_splits else active(self.in_channels, self.width)
        )
        weight, bias = self._sliced(c_in)
        conv = nn.Conv2d(c_in, weight.shape[0], weight.shape[-1], self.stride, self.padding)
        conv.weight.data.copy_(weight.detach())
        conv.bias.data.copy_(bias.detach())
        return conv


class SlimLinear(SlimModule):
    """Linear layer whose output (and optionally input) is a slice of the max-size weight."""

    def __init__(
        self,
        in_features: int,  # input features at width 1
        out_features: int,  # output features at width 1
        *,
        fixed_in: bool = False,  # input never slimmed (full-width time embedding)
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.fixed_in = in_features, out_features, fixed_in
        proto = nn.Linear(in_features, out_features)
        self.weight = nn.Parameter(proto.weight.detach().clone())
        self.bias = nn.Parameter(proto.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_out, c_in = active(self.out_features, self.width), x.shape[-1]
        weight, bias = self._cached((c_out, c_in), lambda: (self.weight[:c_out, :c_in], self.bias[:c_out]))
        return F.linear(x, weight, bias)

    def to_static(self) -> nn.Linear:
        c_in = self.in_features if self.fixed_in else active(self.in_features, self.width)
        c_out = active(self.out_features, self.width)
        lin = nn.Linear(c_in, c_out)
        lin.weight.data.copy_(self.weight[:c_out, :c_in].detach())
        lin.bias.data.copy_(self.bias[:c_out].detach())
        return lin


class SlimGroupNorm(SlimModule):
    """GroupNorm with a fixed number of channels per group at every width.

    Slicing keeps a prefix of channels and groups are contiguous, so group g
    holds exactly the same channels at every width: a narrow net normalises
    its channels with the same statistics the widest net computes for them.
    (A fixed *number* of groups would instead regroup channels per width and
    shrink to one channel per group at small widths.)
    """

    def __init__(
        self,
        num_channels: int,  # channels at width 1
        group_channels: int,  # channels per group, fixed across widths
        eps: float = 1e-6,  # variance floor
    ) -> None:
        super().__init__()
        if num_channels % group_channels:
            raise ValueError(f"{num_channels} channels cannot form groups of {group_channels}")
        self.num_channels, self.group_channels, self.eps = num_channels, group_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.group_norm(x, c // self.group_channels, self.weight[:c], self.bias[:c], self.eps)

    def to_static(self) -> nn.GroupNorm:
        c = active(self.num_channels, self.width)
        gn = nn.GroupNorm(c // self.group_channels, c, eps=self.eps)
        gn.weight.data.copy_(self.weight[:c].detach())
        gn.bias.data.copy_(self.bias[:c].detach())
        return gn


class SlimmableNetwork(NoFeatureReuse, GeometryFromConfig, nn.Module):
    """The width half of a :class:`~ddsm.nn.backbone.Backbone` built from these primitives (ddsm's UNet, the DiT).

    ``config`` holds ``widths``, ``image_size``, ``in_channels`` and
    ``num_classes``; ``set_active_width`` is the only way the width changes;
    ``extract_subnet`` freezes a copy into plain ``torch.nn`` layers that
    serves its one width (``static_width``) and refuses any other.
    """

    config: Any
    static_width: float | None = None  # set on an extracted subnet: the one width it serves
    _width: float = 1.0

    @property
    def widths(self) -> tuple[float, ...]:
        """The widths served: the config's, or the one width of an extracted subnet."""
        return (self.static_width,) if self.static_width is not None else self.config.widths

    @property
    def width(self) -> float:
        """The width every slimmable layer currently runs at."""
        return self.static_width if self.static_width is not None else self._width

    def check_width(self, width: float) -> float:
        """Return ``width`` as the supernet's own float, or raise naming the valid set."""
        from ddsm.nn.backbone import check_width_of

        return check_width_of(self.widths, width, fixed=self.static_width is not None)

    def set_active_width(self, width: float) -> Self:
        """Run every slimmable layer at ``width`` (one of ``widths``) from now on."""
        width = self.check_width(width)
        if self.static_width is None:
            self._width = width
            set_active_width(self, width)
        return self

    def extract_subnet(self, width: float) -> Self:
        """A copy made of plain ``torch.nn`` layers at ``width``, for profiling and deployment."""
        width = self.check_width(width)
        sub = freeze_width(copy.deepcopy(self), width)
        sub.static_width = width
        return sub



def set_active_width(module: nn.Module, width: float) -> None:
    """Make every slimmable layer inside ``module`` run at ``width``."""
    for m in module.modules():
        if isinstance(m, SlimModule):
            m.width = width


def freeze_width(module: nn.Module, width: float) -> nn.Module:
    """Replace, in place, every slimmable layer by its plain equivalent at ``width``."""
    set_active_width(module, width)
    for name, child in list(module.named_children()):
        if isinstance(child, SlimModule):
            setattr(module, name, child.to_static())
        else:
            freeze_width(child, width)
    return module
