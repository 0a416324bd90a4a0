"""MACs of one denoiser call at a given width and resolution (fvcore, with handles for what it skips).

**One unit: MACs (multiply-accumulates) per image; 1 MAC = 2 FLOPs.**
Counted by fvcore (``FlopCountAnalysis``, which traces the model with
``torch.jit.trace``) on ``model.extract_subnet(width)``, the plain-torch copy
at that width, for a batch of one image. FLOPs do not depend on the weights,
so an untrained supernet gives the same counts as a trained one.

What the MAC count contains:

- ``dense``: convolutions, linear layers and attention matmuls; true MACs,
  bias additions not counted (as in fvcore and torch).
- attention: fvcore ignores ``aten::scaled_dot_product_attention`` (it would
  count as zero); we count QK^T plus AV: for q (B, h, L, d), k (B, h, S, d),
  v (B, h, S, dv), ``B*h*L*S*(d + dv)`` MACs, the full score matrix even when
  ``is_causal`` (kernels do not reliably skip the masked half), and the
  scaling + softmax as one op per score (elementwise rule below).
- GroupNorm: fvcore's own estimate, 5 ops per element (mean, variance,
  normalise, affine); nearest upsampling: fvcore's 1 op per output element.
- elementwise ops (silu, add, mul, div, exp, sin/cos, softmax, pooling,
  ...): **counted, one op per element of the larger of the first input and
  the output**, each op taken as one MAC. Why: they grow linearly with width
  while convolutions grow quadratically, so leaving them out would overstate
  what narrow widths save (for the digits reference UNet they are 1.4 % of
  the total at width 1 but 5 % at width 0.25). ``MacCount.dense`` is the
  count without them. Arithmetic on sizes, which tracing records as ops on
  ints or 0-d tensors, costs zero.
- data movement (cat, reshape, transpose, pad, slicing, dropout at
  inference, ...): zero by design; :data:`IGNORED_OPS` lists them (fvcore's
  ignored ops plus :data:`ZERO_COST_OPS`). Any other op fvcore cannot count
  is reported in ``MacCount.unsupported`` and warned about, never silently
  dropped.

Cross-check with ``torch.utils.flop_counter.FlopCounterMode`` (:func:`torch_flops`):
torch counts FLOPs (2 per MAC) and only the kernels it has formulas for
(convolution, mm/addmm/bmm/baddbmm, fused attention); no norm, activation or
elementwise op. It sees an eager run through the dispatcher rather than a
jit trace, and we pin SDPA to its math backend there so attention reaches
torch as two counted bmm's (the CPU flash kernel has no torch formula).
Hence ``torch_flops == 2 * MacCount.dense`` exactly, and ``MacCount.total``
exceeds ``torch_flops / 2`` by the norm and elementwise ops.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ddsm.errors import DDSMError
from ddsm.limits import MEMORY_SHARE, memory_budget
from ddsm.nn.backbone import Backbone

with warnings.catch_warnings():
    # fvcore.nn scripts a loss function at import time; torch deprecates jit.script.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_analysis import _IGNORED_OPS as _FVCORE_IGNORED_OPS
    from fvcore.nn.jit_handles import get_shape


UNIT = "MACs per image (1 MAC = 2 FLOPs)"

#: ops given one op per element (see the module docstring)
ELEMENTWISE_OPS = (
    "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::mul", "aten::mul_",
    "aten::div", "aten::div_", "aten::neg", "aten::exp", "aten::log", "aten::sqrt", "aten::rsqrt", "aten::pow",
    "aten::cos", "aten::sin", "aten::silu", "aten::silu_", "aten::relu", "aten::relu_", "aten::gelu",
    "aten::sigmoid", "aten::tanh", "aten::clamp", "aten::clamp_", "aten::softmax", "aten::log_softmax",
    "aten::mean", "aten::sum", "aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::max_pool2d",
    "aten::argmin",  # a VQ decoder's nearest codebook entry: one comparison per distance
)
#: ops deliberately counted as zero besides fvcore's own ignore list: they move or create data, no arithmetic
ZERO_COST_OPS = frozenset({
    "aten::pad", "aten::constant_pad_nd", "aten::dropout", "aten::cat", "aten::clone", "aten::alias",
    "aten::lift_fresh", "aten::scalar_tensor", "aten::expand_as", "aten::repeat", "aten::as_strided",
    "aten::fill_", "aten::zero_", "aten::linspace", "aten::masked_fill",
    "aten::embedding",  # a class label's table lookup: data movement, no arithmetic
})
#: every op counted as zero: ours plus fvcore's built-in ignore list (reshapes, slicing, cat, ...)
IGNORED_OPS = ZERO_COST_OPS | frozenset(_FVCORE_IGNORED_OPS)
#: ops we add a handle for, on top of fvcore's defaults
HANDLED_OPS = frozenset(ELEMENTWISE_OPS) | {"aten::scaled_dot_product_attention", "aten::cdist"}
#: fvcore operator keys that are MACs proper (conv, linear, matmuls, attention)
DENSE_KEYS = frozenset({"conv", "linear", "addmm", "bmm", "mm", "matmul", "einsum", "attention", "cdist"})


# ---------------------------------------------------------------------------- counting


def _numel(shape: list[int] | None) -> int:
    return int(np.prod(shape)) if shape is not None else 0


def _elementwise_handle(inputs: list[Any], outputs: list[Any]) -> int:
    shapes = [get_shape(inputs[0]), get_shape(outputs[0])]
    # Arithmetic on sizes (e.g. H * W) is traced as ops on ints or 0-d tensors: bookkeeping, not model compute.
    if all(not s for s in shapes):
        return 0
    return max(_numel(s) for s in shapes)


def _cdist_handle(inputs: list[Any], outputs: list[Any]) -> Counter:
    # a VQ decoder's distances to its codebook: (..., P, M) against (..., R, M) is P * R * M multiply-adds
    a, b = get_shape(inputs[0]), get_shape(inputs[1])
    return Counter({"cdist": _numel(a[:-1]) * b[-2] * a[-1]})


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> Counter:
    q, k, v = (get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise RuntimeError("cannot count scaled_dot_product_attention: the trace lost its input shapes")
    batch = _numel(q[:-2])
    length, source, d, dv = q[-2], k[-2], q[-1], v[-1]
    scores = batch * length * source
    return Counter({"attention": scores * (d + dv), "attention_softmax": scores})


def check_resolution(model: Backbone, resolution: int | None) -> int:
    """``resolution`` (``None``: the training ``image_size``) if the network can run on it, else a DDSMError."""
    if resolution is None:
        return model.image_size
    step = model.resolution_step()
    ok = isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool) and resolution > 0
    if not ok or resolution % step:
        raise DDSMError(
            f"resolution {resolution!r} cannot be downsampled {step.bit_length() - 1} times by 2; "
            f"use a positive multiple of {step} (training size: {model.image_size})"
        )
    return int(resolution)


def check_forward_memory(model: Backbone, resolution: int, batch_size: int = 1) -> int:
    """``resolution`` if a forward pass at it fits :func:`ddsm.limits.memory_budget`, else a one-line DDSMError.

    The estimate is the backbone's own (``forward_bytes``): it is what bounds
    ``ddsm cost --resolution`` and ``--batch-size``.
    """

    budget = memory_budget()
    need = model.forward_bytes(resolution, batch_size)
    if need > budget:
        fit = [r for r in model.valid_resolutions() + [model.image_size * 2**k for k in range(1, 4)]
               if model.forward_bytes(r, batch_size) <= budget]
        hint = f"largest side that fits: {max(fit)}" if fit else "lower --batch-size"
        raise DDSMError(f"resolution {resolution} at batch size {batch_size} needs about {need / 2**30:.3g} GiB of "
                        f"activations per forward pass, more than {MEMORY_SHARE:.0%} of the available memory "
                        f"({budget / MEMORY_SHARE / 2**30:.3g} GiB); {hint} (training size: {model.image_size})")
    return resolution


@dataclass(frozen=True)
class MacCount:
    """fvcore's count for one image at one width and resolution, in MACs."""

    total: int  # everything counted: dense + norm + elementwise
    dense: int  # convolutions, linear layers, attention matmuls
    attention: int  # the attention matmuls alone (QK^T and AV)
    by_operator: dict[str, int] = field(default_factory=dict)  # fvcore's per-operator breakdown
    unsupported: dict[str, int] = field(default_factory=dict)  # ops fvcore saw but could not count (calls)

    @property
    def other(self) -> int:
        """Norm, upsampling and elementwise ops: what torch's counter does not see."""
        return self.total - self.dense


def _probe(model: Backbone, resolution: int, batch_size: int = 1, device: str | torch.device = "cpu"):
    # A private generator: measuring must not move the caller's global random stream.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, model.in_channels, resolution, resolution, generator=gen).to(device)
    t = torch.full((batch_size,), 500.0, device=device)  # the timestep value does not change the cost
    return x, t


def _count_subnet(sub: Backbone, resolution: int) -> MacCount:
    return count_module_macs(sub, *_probe(sub, resolution))


def count_module_macs(module: torch.nn.Module, *inputs: torch.Tensor) -> MacCount:
    """MACs of ``module(*inputs)`` under the rules above (fvcore plus ddsm's handles), e.g. for one block alone."""
    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_handle)
    analysis.set_op_handle("aten::cdist", _cdist_handle)
    analysis.set_op_handle(**{op: _elementwise_handle for op in ELEMENTWISE_OPS})
    analysis.set_op_handle(**{op: None for op in ZERO_COST_OPS})
    # fvcore's own warnings would also flag the ops we ignore on purpose; we warn below about the rest only.
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = {k: int(v) for k, v in analysis.by_operator().items()}
    unsupported = {k: int(v) for k, v in analysis.unsupported_ops().items()}
    if unsupported:
        warnings.warn(f"MAC count skips ops fvcore cannot count: {sorted(unsupported)}; add a handle in ddsm.cost",
                      stacklevel=3)
    return MacCount(
        total=sum(by_op.values()),
        dense=sum(v for k, v in by_op.items() if k in DENSE_KEYS),
        attention=by_op.get("attention", 0),
        by_operator=by_op,
        unsupported=unsupported,
    )


def _torch_flops_subnet(sub: Backbone, resolution: int) -> int:
    # MATH makes SDPA decompose into bmm's, which torch's counter has formulas for.
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        sub(*_probe(sub, resolution))
    return int(counter.get_total_flops())


def _cpu_subnet(model: Backbone, width: float) -> Backbone:
    return model.extract_subnet(width).to("cpu").eval()


def count_macs(model: Backbone, width: float, resolution: int | None = None) -> MacCount:
    """MACs for one image through ``model`` at ``width`` and square ``resolution`` (default: training size)."""
    resolution = check_resolution(model, resolution)
    return _count_subnet(_cpu_subnet(model, width), resolution)


class _CachedCall(torch.nn.Module):
    # a cached call as a module fvcore can trace: only the part outside the cache level runs
    def __init__(self, sub: Backbone, level: int, deep: torch.Tensor) -> None:
        super().__init__()
        self.sub, self.level, self.deep = sub, level, deep

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.sub.forward_reuse(x, t, level=self.level, deep=self.deep)[0]


def count_cached_macs(model: Backbone, width: float, level: int) -> MacCount:
    """MACs for one image through a *cached* call of ``model`` at ``width`` (:meth:`Backbone.forward_reuse`): the
    part outside cache ``level`` only, at the training size; the features it reads are filled at the same width."""
    from ddsm.nn.backbone import check_reuse_level

    check_reuse_level(model, level)
    sub = _cpu_subnet(model, width)
    x, t = _probe(sub, sub.image_size)
    with torch.no_grad():
        _, deep = sub.forward_reuse(x, t, level=level, deep=None)
    return count_module_macs(_CachedCall(sub, level, deep), x, t)


def torch_flops(model: Backbone, width: float, resolution: int | None = None) -> int:
    """FLOPs (2 per MAC) for one image as ``torch.utils.flop_counter`` counts them: dense ops only."""
    resolution = check_resolution(model, resolution)
    return _torch_flops_subnet(_cpu_subnet(model, width), resolution)


class _Decode(torch.nn.Module):
    # fvcore traces a module's forward: a latent codec's decode as one
    def __init__(self, codec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(z)


def count_decoder_macs(codec, channels: int, side: int) -> int:
    """MACs of decoding one ``channels`` x ``side`` x ``side`` latent with a latent model's codec
    (:class:`~ddsm.nn.autoencoder.LatentCodec`), counted on a CPU copy under the rules above."""
    z = torch.zeros(1, channels, side, side)
    return count_module_macs(_Decode(copy.deepcopy(codec).cpu()), z).total
