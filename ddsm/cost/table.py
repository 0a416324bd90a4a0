"""The cost table: MACs and latency per (width, resolution) of one supernet on one device, as a versioned file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from ddsm.checkpoint import config_diff
from ddsm.config import ModelConfig, _Frozen, validate, width_index
from ddsm.cost.latency import _check_timing, _device_name, device_key, measure_latencies
from ddsm.cost.model import CostModel
from ddsm.cost.macs import UNIT, _count_subnet, _cpu_subnet, _torch_flops_subnet, check_forward_memory, check_resolution
from ddsm.device import resolve_device
from ddsm.errors import DDSMError
from ddsm.io import read_json, write_json
from ddsm.limits import MAX_CONFIG_BYTES, short
from ddsm.nn.unet import SlimUNet
from ddsm.plan import StepPlan

COST_TABLE_VERSION = 1
METRICS = ("macs", "latency")


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
        for r in resolutions:  # before any counting or timing: a huge side would exhaust memory
            check_forward_memory(config.unet, r, batch_size)
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
        data = read_json(path, "cost table", max_bytes=MAX_CONFIG_BYTES)
        if not isinstance(data, dict):
            raise DDSMError(f"cost table {str(path)!r} must hold a JSON object, got {type(data).__name__}")
        if data.get("kind") != "ddsm.cost_table":
            raise DDSMError(f"{short(str(path), 120)} is of kind {short(data.get('kind'))}, not a ddsm.cost_table")
        if data.get("schema_version") != COST_TABLE_VERSION:
            raise DDSMError(f"cost table {short(str(path), 120)} has schema_version {short(data.get('schema_version'))}; "
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
        i = width_index(width, [e.width for e in at_res])
        if i is not None:
            return at_res[i]
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

    def cost_model(self, metric: str = "macs", widths: Sequence[float] | None = None,
                   sides: Sequence[int] | None = None) -> CostModel:
        """The :class:`~ddsm.cost.model.CostModel` of ``metric`` over ``widths`` x ``sides``.

        Defaults: every width of the table; without ``sides``, a width-only
        model at the training size.
        """
        if metric not in METRICS:
            raise DDSMError(f"unknown cost metric {metric!r}; valid: {', '.join(METRICS)}")
        widths = self.widths if widths is None else widths
        keys = [(w, r) for w in widths for r in (sides or (None,))]
        return CostModel.from_mapping({(w if r is None else (w, r)): self.cost(w, r, metric) for w, r in keys},
                                      widths, sides, unit=metric)

    def schedule_cost(self, widths: Sequence[float], metric: str = "macs",
                      resolutions: int | Sequence[int] | None = None) -> float:
        """Total cost of a schedule (one width per sampling step), optionally with one resolution per step."""
        widths = list(widths)
        if metric not in METRICS:
            raise DDSMError(f"unknown cost metric {metric!r}; valid: {', '.join(METRICS)}")
        if resolutions is None or isinstance(resolutions, (int, np.integer)):
            resolutions = [resolutions] * len(widths)
        resolutions = list(resolutions)
        if len(resolutions) != len(widths):
            raise DDSMError(f"{len(resolutions)} resolutions for a schedule of {len(widths)} widths")
        sides = sorted({self.image_size if r is None else int(r) for r in resolutions})
        model = self.cost_model(metric, sorted({self.entry(w, r).width for w, r in zip(widths, resolutions)}), sides)
        return model.plan_cost(StepPlan(tuple(widths), tuple(self.image_size if r is None else r for r in resolutions)))

    def full_width_cost(self, steps: int, metric: str = "macs", *, resolution: int | None = None) -> float:
        """Cost of ``steps`` sampling steps all at width 1, the baseline a schedule is compared with."""
        if steps < 1:
            raise DDSMError(f"steps must be positive, got {steps}")
        return steps * self.cost(1.0, resolution, metric)
