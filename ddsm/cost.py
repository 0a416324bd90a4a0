"""What one denoiser call costs at a given width (and resolution): MACs and latency.

A width schedule (one supernet width per sampling step) is only worth
searching against a cost model, and this module is that model. Two costs are
measured per (width, resolution) and stored in a :class:`CostTable`:

- **Compute**, in ONE unit: **MACs (multiply-accumulates) per image; 1 MAC =
  2 FLOPs.** Counted by fvcore (``FlopCountAnalysis``, which traces the model
  with ``torch.jit.trace``) on ``model.extract_subnet(width)``, the plain-torch
  copy at that width, for a batch of one image. FLOPs do not depend on the
  weights, so an untrained supernet gives the same counts as a trained one.
- **Latency**: median wall-clock seconds of one forward pass of
  ``batch_size`` images on the *slimmable supernet* after
  ``set_active_width`` (exactly how sampling runs it, slicing overhead
  included), under ``torch.no_grad``, after warm-up calls, widths timed
  round-robin, with the torch thread count recorded beside it.

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

import contextlib
import copy
import platform
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ddsm.checkpoint import config_diff
from ddsm.config import ModelConfig, UNetConfig, _Frozen, validate
from ddsm.device import resolve_device
from ddsm.errors import DDSMError
from ddsm.io import read_json, write_json
from ddsm.nn.unet import SlimUNet

with warnings.catch_warnings():
    # fvcore.nn scripts a loss function at import time; torch deprecates jit.script.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_analysis import _IGNORED_OPS as _FVCORE_IGNORED_OPS
    from fvcore.nn.jit_handles import get_shape

COST_TABLE_VERSION = 1
UNIT = "MACs per image (1 MAC = 2 FLOPs)"
METRICS = ("macs", "latency")

#: ops given one op per element (see the module docstring)
ELEMENTWISE_OPS = (
    "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::mul", "aten::mul_",
    "aten::div", "aten::div_", "aten::neg", "aten::exp", "aten::log", "aten::sqrt", "aten::rsqrt", "aten::pow",
    "aten::cos", "aten::sin", "aten::silu", "aten::silu_", "aten::relu", "aten::relu_", "aten::gelu",
    "aten::sigmoid", "aten::tanh", "aten::clamp", "aten::clamp_", "aten::softmax", "aten::log_softmax",
    "aten::mean", "aten::sum", "aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::max_pool2d",
)
#: ops deliberately counted as zero besides fvcore's own ignore list: they move or create data, no arithmetic
ZERO_COST_OPS = frozenset({
    "aten::pad", "aten::constant_pad_nd", "aten::dropout", "aten::cat", "aten::clone", "aten::alias",
    "aten::lift_fresh", "aten::scalar_tensor", "aten::expand_as", "aten::repeat", "aten::as_strided",
    "aten::fill_", "aten::zero_", "aten::linspace", "aten::masked_fill",
})
#: every op counted as zero: ours plus fvcore's built-in ignore list (reshapes, slicing, cat, ...)
IGNORED_OPS = ZERO_COST_OPS | frozenset(_FVCORE_IGNORED_OPS)
#: ops we add a handle for, on top of fvcore's defaults
HANDLED_OPS = frozenset(ELEMENTWISE_OPS) | {"aten::scaled_dot_product_attention"}
#: fvcore operator keys that are MACs proper (conv, linear, matmuls, attention)
DENSE_KEYS = frozenset({"conv", "linear", "addmm", "bmm", "mm", "matmul", "einsum", "attention"})


# ---------------------------------------------------------------------------- counting


def _numel(shape: list[int] | None) -> int:
    return int(np.prod(shape)) if shape is not None else 0


def _elementwise_handle(inputs: list[Any], outputs: list[Any]) -> int:
    shapes = [get_shape(inputs[0]), get_shape(outputs[0])]
    # Arithmetic on sizes (e.g. H * W) is traced as ops on ints or 0-d tensors: bookkeeping, not model compute.
    if all(not s for s in shapes):
        return 0
    return max(_numel(s) for s in shapes)


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> Counter:
    q, k, v = (get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise RuntimeError("cannot count scaled_dot_product_attention: the trace lost its input shapes")
    batch = _numel(q[:-2])
    length, source, d, dv = q[-2], k[-2], q[-1], v[-1]
    scores = batch * length * source
    return Counter({"attention": scores * (d + dv), "attention_softmax": scores})


def check_resolution(config: UNetConfig, resolution: int | None) -> int:
    """``resolution`` (``None``: the training ``image_size``) if the UNet can run on it, else a DDSMError."""
    if resolution is None:
        return config.image_size
    factor = 2 ** (len(config.channel_mults) - 1)
    ok = isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool) and resolution > 0
    if not ok or resolution % factor:
        raise DDSMError(
            f"resolution {resolution!r} cannot be downsampled {len(config.channel_mults) - 1} times by 2; "
            f"use a positive multiple of {factor} (training size: {config.image_size})"
        )
    return int(resolution)


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


def _probe(config: UNetConfig, resolution: int, batch_size: int = 1, device: str | torch.device = "cpu"):
    # A private generator: measuring must not move the caller's global random stream.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, config.in_channels, resolution, resolution, generator=gen).to(device)
    t = torch.full((batch_size,), 500.0, device=device)  # the timestep value does not change the cost
    return x, t


def _count_subnet(sub: SlimUNet, resolution: int) -> MacCount:
    analysis = FlopCountAnalysis(sub, _probe(sub.config, resolution))
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_handle)
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


def _torch_flops_subnet(sub: SlimUNet, resolution: int) -> int:
    # MATH makes SDPA decompose into bmm's, which torch's counter has formulas for.
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        sub(*_probe(sub.config, resolution))
    return int(counter.get_total_flops())


def _cpu_subnet(model: SlimUNet, width: float) -> SlimUNet:
    return model.extract_subnet(width).to("cpu").eval()


def count_macs(model: SlimUNet, width: float, resolution: int | None = None) -> MacCount:
    """MACs for one image through ``model`` at ``width`` and square ``resolution`` (default: training size)."""
    resolution = check_resolution(model.config, resolution)
    return _count_subnet(_cpu_subnet(model, width), resolution)


def torch_flops(model: SlimUNet, width: float, resolution: int | None = None) -> int:
    """FLOPs (2 per MAC) for one image as ``torch.utils.flop_counter`` counts them: dense ops only."""
    resolution = check_resolution(model.config, resolution)
    return _torch_flops_subnet(_cpu_subnet(model, width), resolution)


# ---------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class LatencyStats:
    """Timed forward passes of ``batch_size`` images at one width and resolution."""

    median_s: float  # median seconds per forward pass
    iqr_s: float  # interquartile range of the same samples
    samples_s: tuple[float, ...]  # every timed pass, in order
    batch_size: int
    threads: int  # torch.get_num_threads() during the measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _sampling_state(model: SlimUNet) -> Iterator[SlimUNet]:
    # Measuring must not leave the caller's model in another width or mode.
    was_training, width = model.training, model.width
    model.eval()
    try:
        yield model
    finally:
        model.set_active_width(width)
        model.train(was_training)


def _check_timing(batch_size: int, repeats: int, warmup: int) -> None:
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise DDSMError(f"batch_size ({batch_size}) and repeats ({repeats}) must be positive, warmup ({warmup}) >= 0")


def measure_latencies(
    model: SlimUNet,
    widths: Sequence[float],
    resolution: int | None = None,
    *,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
) -> dict[float, LatencyStats]:
    """Time ``model`` (on its own device) at each width as sampling runs it: ``set_active_width``, then forward.

    Widths are timed round-robin, one pass each per round, so a load that
    drifts over the run (another job, thermal throttling) hits every width
    alike instead of whichever was timed last.
    """
    _check_timing(batch_size, repeats, warmup)
    resolution = check_resolution(model.config, resolution)
    widths = [model.check_width(w) for w in widths]
    device = next(model.parameters()).device
    x, t = _probe(model.config, resolution, batch_size, device)
    times: dict[float, list[float]] = {w: [] for w in widths}
    with _sampling_state(model), torch.no_grad():
        for i in range(warmup + repeats):
            for w in widths:
                model.set_active_width(w)
                _sync(device)
                start = time.perf_counter()
                model(x, t)
                _sync(device)
                if i >= warmup:
                    times[w].append(time.perf_counter() - start)
    out = {}
    for w, ts in times.items():
        q1, q3 = np.percentile(ts, [25, 75])
        out[w] = LatencyStats(median_s=statistics.median(ts), iqr_s=float(q3 - q1), samples_s=tuple(ts),
                              batch_size=batch_size, threads=torch.get_num_threads())
    return out


def measure_latency(
    model: SlimUNet,
    width: float,
    resolution: int | None = None,
    *,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
) -> LatencyStats:
    """Time ``model`` at one ``width``; see :func:`measure_latencies`."""
    width = model.check_width(width)
    return measure_latencies(model, [width], resolution, batch_size=batch_size, repeats=repeats, warmup=warmup)[width]


# ---------------------------------------------------------------------------- the table


def device_key(device: str | torch.device | None) -> str:
    """Canonical device string for a cost table: ``cpu`` or ``cuda:N`` (``cuda`` means the current GPU)."""
    if device is None or str(device) == "auto":
        device = resolve_device(device)
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DDSMError(f"device {device!r} is not a torch device; valid: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and dev.index is None:
        return f"cuda:{torch.cuda.current_device() if torch.cuda.is_available() else 0}"
    return str(dev)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class CostEntry(_Frozen):
    """The cost of one denoiser call at one (width, resolution)."""

    width: float = Field(gt=0.0, le=1.0)  # supernet width multiplier
    resolution: int = Field(gt=0)  # side of the square input, in pixels
    macs: int = Field(ge=0)  # MACs per image, everything counted (see ddsm.cost)
    dense_macs: int = Field(ge=0)  # MACs per image of convs, linears and attention matmuls
    attention_macs: int = Field(ge=0)  # MACs per image of the attention matmuls
    torch_flops: int = Field(ge=0)  # FLOPs per image by torch.utils.flop_counter (2 x dense_macs)
    latency_s: float = Field(gt=0.0)  # median seconds per forward pass of batch_size images
    latency_iqr_s: float = Field(ge=0.0)  # interquartile range of those seconds


class CostTable(_Frozen):
    """Per-(width, resolution) cost of one supernet on one device; what schedule search prices steps with."""

    schema_version: Literal[1] = COST_TABLE_VERSION
    kind: Literal["ddsm.cost_table"] = "ddsm.cost_table"
    supernet: str  # ModelConfig.fingerprint() of the measured supernet
    image_size: int = Field(gt=0)  # the training resolution, used when no resolution is given
    device: str  # canonical device of the latency figures: cpu or cuda:N
    device_name: str = ""  # GPU or CPU model, for the record
    unit: Literal["MACs per image (1 MAC = 2 FLOPs)"] = UNIT  # unit of macs, dense_macs, attention_macs
    batch_size: int = Field(gt=0)  # images per timed forward pass
    repeats: int = Field(gt=0)  # timed passes per entry
    warmup: int = Field(ge=0)  # untimed passes before them
    threads: int = Field(gt=0)  # torch CPU threads during the measurement
    torch_version: str
    entries: tuple[CostEntry, ...]

    @model_validator(mode="after")
    def _unique(self) -> "CostTable":
        if not self.entries:
            raise ValueError("a cost table needs at least one entry")
        keys = [(round(e.width, 9), e.resolution) for e in self.entries]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"duplicate (width, resolution) entries: {dup}")
        return self

    # -- building ------------------------------------------------------------

    @classmethod
    def measure(
        cls,
        model: SlimUNet,
        config: ModelConfig,
        device: str | torch.device | None = None,
        *,
        widths: Sequence[float] | None = None,
        resolutions: Sequence[int] | None = None,
        batch_size: int = 64,
        repeats: int = 20,
        warmup: int = 3,
        progress: bool = False,
    ) -> "CostTable":
        """Count MACs and time every (width, resolution) of ``model`` on ``device`` (default: auto).

        ``widths`` default to all the supernet serves, ``resolutions`` to the training size.
        MACs are counted on CPU copies; latency is timed on ``device``, widths round-robin
        (:func:`measure_latencies`). The caller's model keeps its device, width and train/eval mode.
        """
        if model.config != config.unet:
            diff = config_diff(model.config.model_dump(mode="json"), config.unet.model_dump(mode="json"))
            raise DDSMError(f"model does not match config {config.fingerprint()}; differs in: {'; '.join(diff)} "
                            "(model vs config)")
        _check_timing(batch_size, repeats, warmup)
        dev = resolve_device(device)
        widths = sorted({model.check_width(w) for w in (widths if widths is not None else config.unet.widths)})
        resolutions = sorted({check_resolution(config.unet, r) for r in (resolutions or [config.unet.image_size])})
        if not widths:
            raise DDSMError(f"no widths to measure; valid widths: {list(config.unet.widths)}")
        # Time a copy when the model lives elsewhere, so the caller's model stays where it is.
        same = device_key(next(model.parameters()).device) == device_key(dev)
        timed = model if same else copy.deepcopy(model).to(dev)
        counted = {}
        with tqdm(total=2 * len(widths) * len(resolutions), desc="cost", unit="task", disable=not progress) as bar:
            for w in widths:
                sub = _cpu_subnet(model, w)
                for r in resolutions:
                    counted[w, r] = (_count_subnet(sub, r), _torch_flops_subnet(sub, r))
                    bar.update(1)
            timed_stats = {}
            for r in resolutions:
                timed_stats.update({(w, r): st for w, st in measure_latencies(
                    timed, widths, r, batch_size=batch_size, repeats=repeats, warmup=warmup).items()})
                bar.update(len(widths))
        entries = []
        for w in widths:
            for r in resolutions:
                (macs, flops), lat = counted[w, r], timed_stats[w, r]
                entries.append(CostEntry(
                    width=w, resolution=r, macs=macs.total, dense_macs=macs.dense, attention_macs=macs.attention,
                    torch_flops=flops, latency_s=lat.median_s, latency_iqr_s=lat.iqr_s,
                ))
        return cls(supernet=config.fingerprint(), image_size=config.unet.image_size, device=device_key(dev),
                   device_name=_device_name(dev), batch_size=batch_size, repeats=repeats, warmup=warmup,
                   threads=torch.get_num_threads(), torch_version=torch.__version__, entries=tuple(entries))

    # -- files ---------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the table as JSON, atomically."""
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path, model_config: ModelConfig | None = None,
             device: str | torch.device | None = None) -> "CostTable":
        """Read a cost table; with ``model_config`` / ``device``, refuse one made for another supernet or device."""
        path = Path(path)
        data = read_json(path, "cost table")
        if not isinstance(data, dict):
            raise DDSMError(f"cost table {str(path)!r} must hold a JSON object, got {type(data).__name__}")
        if data.get("kind") != "ddsm.cost_table":
            raise DDSMError(f"{str(path)!r} is of kind {data.get('kind')!r}, not a ddsm.cost_table")
        if data.get("schema_version") != COST_TABLE_VERSION:
            raise DDSMError(f"cost table {str(path)!r} has schema_version {data.get('schema_version')!r}; "
                            f"this ddsm reads {COST_TABLE_VERSION}")
        table = validate(cls, data, source=f"cost table {path}")
        want_fp = model_config.fingerprint() if model_config is not None else table.supernet
        want_dev = device_key(device) if device is not None else table.device
        if (want_fp, want_dev) != (table.supernet, table.device):
            raise DDSMError(f"cost table {str(path)!r} was made for supernet {table.supernet} on {table.device}, "
                            f"not {want_fp} on {want_dev}; measure one with ddsm cost")
        return table

    # -- lookup --------------------------------------------------------------

    @property
    def widths(self) -> tuple[float, ...]:
        """Widths with at least one entry, ascending."""
        return tuple(sorted({e.width for e in self.entries}))

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Resolutions with at least one entry, ascending."""
        return tuple(sorted({e.resolution for e in self.entries}))

    def entry(self, width: float, resolution: int | None = None) -> CostEntry:
        """The entry at ``width`` and ``resolution`` (default: the training size), or a DDSMError naming valid ones."""
        res = self.image_size if resolution is None else resolution
        at_res = [e for e in self.entries if e.resolution == res]
        if not at_res:
            raise DDSMError(f"resolution {res!r} is not in this cost table; "
                            f"valid resolutions: {list(self.resolutions)}")
        for e in at_res:
            if abs(float(width) - e.width) < 1e-9:
                return e
        raise DDSMError(f"width {width!r} is not in this cost table at resolution {res}; "
                        f"valid widths: {sorted(e.width for e in at_res)}")

    def macs(self, width: float, resolution: int | None = None) -> int:
        """MACs per image of one denoiser call."""
        return self.entry(width, resolution).macs

    def latency(self, width: float, resolution: int | None = None) -> float:
        """Median seconds of one denoiser call on ``batch_size`` images."""
        return self.entry(width, resolution).latency_s

    def cost(self, width: float, resolution: int | None = None, metric: str = "macs") -> float:
        """One step's cost in ``metric``: 'macs' (per image) or 'latency' (seconds per batch)."""
        if metric not in METRICS:
            raise DDSMError(f"unknown cost metric {metric!r}; valid: {', '.join(METRICS)}")
        e = self.entry(width, resolution)
        return float(e.macs if metric == "macs" else e.latency_s)

    def schedule_cost(self, widths: Sequence[float], metric: str = "macs",
                      resolutions: int | Sequence[int] | None = None) -> float:
        """Total cost of a schedule (one width per sampling step), optionally with one resolution per step."""
        widths = list(widths)
        if resolutions is None or isinstance(resolutions, (int, np.integer)):
            resolutions = [resolutions] * len(widths)
        resolutions = list(resolutions)
        if len(resolutions) != len(widths):
            raise DDSMError(f"{len(resolutions)} resolutions for a schedule of {len(widths)} widths")
        return float(sum(self.cost(w, r, metric) for w, r in zip(widths, resolutions)))

    def full_width_cost(self, steps: int, metric: str = "macs", *, resolution: int | None = None) -> float:
        """Cost of ``steps`` sampling steps all at width 1, the baseline a schedule is compared with."""
        if steps < 1:
            raise DDSMError(f"steps must be positive, got {steps}")
        return steps * self.cost(1.0, resolution, metric)
