"""The cost table: MACs and latency per (width, resolution, batch) of one supernet on one device, as a versioned file.

Latency depends on the batch far more than MACs suggest (a narrow width at
batch 1 is mostly per-call overhead), so a table may hold several batches
and a latency search names the one it prices (``objectives.batch``).
Version 1 files (one batch for the whole table) still load. A table may also
hold *cached* calls (``ddsm cost --cache-level L``: the outer part of the
network only, :mod:`ddsm.samplers.reuse`), at the training size; such a table
is version 3, so an older ddsm refuses it by its version.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from ddsm.checkpoint import Supernet, config_diff
from ddsm.config import ModelConfig, _Frozen, validate, width_index
from ddsm.cost.latency import _check_timing, _device_name, device_key, measure_latencies, time_call
from ddsm.cost.macs import (
    UNIT, _count_subnet, _cpu_subnet, _torch_flops_subnet, check_forward_memory, check_resolution, count_cached_macs,
    count_decoder_macs,
)
from ddsm.cost.model import CostModel
from ddsm.device import resolve_device
from ddsm.errors import DDSMError
from ddsm.io import read_json, write_json
from ddsm.limits import MAX_CONFIG_BYTES, short
from ddsm.nn.backbone import Backbone, check_reuse_level
from ddsm.nn.registry import architecture_of
from ddsm.plan import StepPlan

COST_TABLE_VERSION = 2
#: the version of a table with cached calls
CACHED_TABLE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
METRICS = ("macs", "latency")


class CostEntry(_Frozen):
    """The cost of one denoiser call at one (width, resolution, batch)."""

    width: float = Field(gt=0.0, le=1.0)  # supernet width multiplier
    resolution: int = Field(gt=0)  # side of the square input, in pixels
    macs: int = Field(ge=0)  # MACs per image, everything counted (see ddsm.cost)
    dense_macs: int = Field(ge=0)  # MACs per image of convs, linears and attention matmuls
    attention_macs: int = Field(ge=0)  # MACs per image of the attention matmuls
    torch_flops: int = Field(ge=0)  # FLOPs per image by torch.utils.flop_counter (2 x dense_macs)
    batch_size: int = Field(gt=0)  # images per timed forward pass
    latency_s: float = Field(gt=0.0)  # median seconds per forward pass of batch_size images
    latency_iqr_s: float = Field(ge=0.0)  # interquartile range of those seconds
    cache_level: int | None = Field(None, ge=0)  # a cached call at this level (None: a full call)

    OMIT_WHEN = {"cache_level": None}  # a full call's entry is written as it always was


class DecoderCost(_Frozen):
    """A latent model's decoder, run once per image after the last step: its MACs and time, beside the denoiser's
    calls (a front's shares are of the denoiser calls; :meth:`CostTable.share_with_decoder` adds it)."""

    macs: int = Field(ge=0)  # MACs per decoded image (fvcore, the denoiser's rules)
    batch_size: int = Field(gt=0)  # images per timed decode
    latency_s: float = Field(gt=0.0)  # median seconds per decode of batch_size images
    latency_iqr_s: float = Field(ge=0.0)


class CostTable(_Frozen):
    """Per-(width, resolution, batch) cost of one supernet on one device; what schedule search prices steps with."""

    schema_version: Literal[2, 3] = COST_TABLE_VERSION  # 3 exactly when it holds cached calls
    kind: Literal["ddsm.cost_table"] = "ddsm.cost_table"
    supernet: str  # ModelConfig.fingerprint() of the measured supernet
    image_size: int = Field(gt=0)  # the training resolution, used when no resolution is given
    device: str  # canonical device of the latency figures: cpu or cuda:N
    device_name: str = ""  # GPU or CPU model, for the record
    unit: Literal["MACs per image (1 MAC = 2 FLOPs)"] = UNIT  # unit of macs, dense_macs, attention_macs
    batch_size: int = Field(gt=0)  # the default batch: what a lookup without a batch reads
    repeats: int = Field(gt=0)  # timed passes per entry
    warmup: int = Field(ge=0)  # untimed passes before them
    threads: int = Field(gt=0)  # torch CPU threads during the measurement
    torch_version: str
    entries: tuple[CostEntry, ...]
    decoder: DecoderCost | None = None  # a latent model's decoder, once per image; None: a pixel-space model

    OMIT_WHEN = {"decoder": None}  # a pixel-space model's table is written as it always was

    @model_validator(mode="after")
    def _unique(self) -> "CostTable":
        if not self.entries:
            raise ValueError("a cost table needs at least one entry")
        keys = [(round(e.width, 9), e.resolution, e.batch_size, e.cache_level) for e in self.entries]
        dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        if dup:
            raise ValueError(f"duplicate (width, resolution, batch, cache level) entries: {dup}")
        cached = any(e.cache_level is not None for e in self.entries)
        if cached != (self.schema_version == CACHED_TABLE_VERSION):
            raise ValueError(f"schema_version {self.schema_version} with{'' if cached else 'out'} cached calls: "
                             f"version {CACHED_TABLE_VERSION} is exactly the table with cached calls")
        if self.batch_size not in {e.batch_size for e in self.entries}:
            raise ValueError(f"default batch_size {self.batch_size} has no entries")
        return self

    # -- building ------------------------------------------------------------

    @classmethod
    def measure(
        cls,
        model: Backbone,
        config: ModelConfig,
        device: str | torch.device | None = None,
        *,
        widths: Sequence[float] | None = None,
        resolutions: Sequence[int] | None = None,
        batch_size: int | Sequence[int] = 64,
        repeats: int = 20,
        warmup: int = 3,
        progress: bool = False,
        cache_levels: Sequence[int] = (),
    ) -> "CostTable":
        """Count MACs and time every (width, resolution) of ``model`` on ``device`` (default: auto).

        ``widths`` default to all the supernet serves, ``resolutions`` to the training size;
        ``batch_size`` may list several batches (the first is the table's default); ``cache_levels`` adds a
        cached call per width, batch and level at the training size.
        MACs are counted on CPU copies; latency is timed on ``device``, widths round-robin
        (:func:`measure_latencies`). The caller's model keeps its device, width and train/eval mode.
        """
        if model.config != architecture_of(config) or model.widths != config.geometry.widths:
            diff = config_diff({"architecture": model.config.model_dump(mode="json"), "widths": list(model.widths)},
                               {"architecture": architecture_of(config).model_dump(mode="json"),
                                "widths": list(config.geometry.widths)})
            raise DDSMError(f"model does not match config {config.fingerprint()}; differs in: {'; '.join(diff)} "
                            "(model vs config)")
        batches = list(dict.fromkeys([batch_size] if isinstance(batch_size, (int, np.integer)) else batch_size))
        if not batches:
            raise DDSMError("no batch sizes to measure; give at least one positive batch size")
        for b in batches:
            _check_timing(b, repeats, warmup)
        dev = resolve_device(device)
        widths = sorted({model.check_width(w) for w in (widths if widths is not None else config.geometry.widths)})
        resolutions = sorted({check_resolution(model, r) for r in (resolutions or [config.geometry.image_size])})
        for r in resolutions:  # before any counting or timing: a huge side would exhaust memory
            check_forward_memory(model, r, max(batches))
        if not widths:
            raise DDSMError(f"no widths to measure; valid widths: {list(config.geometry.widths)}")
        levels = sorted({check_reuse_level(model, int(lv)) for lv in cache_levels})
        # Time a copy when the model lives elsewhere, so the caller's model stays where it is.
        same = device_key(next(model.parameters()).device) == device_key(dev)
        timed = model if same else copy.deepcopy(model).to(dev)
        counted = {}
        size = config.geometry.image_size
        with tqdm(total=(1 + len(batches)) * len(widths) * (len(resolutions) + len(levels)), desc="cost",
                  unit="task", disable=not progress) as bar:
            for w in widths:
                sub = _cpu_subnet(model, w)
                for r in resolutions:
                    counted[w, r, None] = (_count_subnet(sub, r), _torch_flops_subnet(sub, r))
                    bar.update(1)
                for lv in levels:
                    counted[w, size, lv] = (count_cached_macs(model, w, lv), None)
                    bar.update(1)
            timed_stats = {}
            for b in batches:
                for r, lv in [(r, None) for r in resolutions] + [(size, lv) for lv in levels]:
                    timed_stats.update({(w, r, b, lv): st for w, st in measure_latencies(
                        timed, widths, r, batch_size=b, repeats=repeats, warmup=warmup, cache_level=lv).items()})
                    bar.update(len(widths))
        entries = []
        for b in batches:
            for (w, r, lv), (macs, flops) in counted.items():
                lat = timed_stats[w, r, b, lv]
                entries.append(CostEntry(
                    width=w, resolution=r, macs=macs.total, dense_macs=macs.dense, attention_macs=macs.attention,
                    torch_flops=2 * macs.dense if flops is None else flops, batch_size=b, latency_s=lat.median_s,
                    latency_iqr_s=lat.iqr_s, cache_level=lv,
                ))
        decoder = None
        if getattr(model, "codec", None) is not None:
            decoder = measure_decoder(timed.codec, config, batch_size=batches[0], repeats=repeats, warmup=warmup)
        return cls(schema_version=CACHED_TABLE_VERSION if levels else COST_TABLE_VERSION,
                   supernet=config.fingerprint(), image_size=config.geometry.image_size, device=device_key(dev),
                   device_name=_device_name(dev), batch_size=batches[0], repeats=repeats, warmup=warmup,
                   threads=torch.get_num_threads(), torch_version=torch.__version__, entries=tuple(entries),
                   decoder=decoder)

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
        if data.get("schema_version") not in READABLE_VERSIONS:
            raise DDSMError(f"cost table {short(str(path), 120)} has schema_version {short(data.get('schema_version'))}; "
                            f"this ddsm reads {', '.join(map(str, READABLE_VERSIONS))}")
        if data["schema_version"] == 1:  # one batch for the whole table: every entry was timed at it
            entries = data.get("entries")
            if isinstance(entries, list):
                data = {**data, "schema_version": COST_TABLE_VERSION, "entries": [
                    {"batch_size": data.get("batch_size"), **e} if isinstance(e, dict) else e for e in entries]}
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

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Batches with at least one entry, ascending."""
        return tuple(sorted({e.batch_size for e in self.entries}))

    def check_batch(self, batch: int | None) -> int:
        """``batch`` (default: the table's default batch) if the table holds it, else a DDSMError naming valid ones."""
        b = self.batch_size if batch is None else batch
        if b not in self.batch_sizes:
            raise DDSMError(f"batch {b!r} is not in this cost table; valid batches: {list(self.batch_sizes)} "
                            "(measure more with ddsm cost --batch-size N, repeatable)")
        return b

    @property
    def cache_levels(self) -> tuple[int, ...]:
        """Cache levels with cached-call entries, ascending."""
        return tuple(sorted({e.cache_level for e in self.entries if e.cache_level is not None}))

    def entry(self, width: float, resolution: int | None = None, batch: int | None = None,
              cache_level: int | None = None) -> CostEntry:
        """The entry at ``width``, ``resolution`` (default: the training size) and ``batch`` (default: the table's)
        of a full call, or of a cached call at ``cache_level``; a DDSMError naming valid ones."""
        res = self.image_size if resolution is None else resolution
        b = self.check_batch(batch)
        if cache_level is not None and cache_level not in self.cache_levels:
            raise DDSMError(f"cache level {cache_level!r} is not in this cost table; measured levels: "
                            f"{list(self.cache_levels) or 'none'} (measure with ddsm cost --cache-level L)")
        at_res = [e for e in self.entries if e.resolution == res and e.batch_size == b and e.cache_level == cache_level]
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

    def latency(self, width: float, resolution: int | None = None, batch: int | None = None) -> float:
        """Median seconds of one denoiser call on ``batch`` images (default: the table's batch)."""
        return self.entry(width, resolution, batch).latency_s

    def cost(self, width: float, resolution: int | None = None, metric: str = "macs", batch: int | None = None
             ) -> float:
        """One step's cost in ``metric``: 'macs' (per image) or 'latency' (seconds per call on ``batch`` images)."""
        if metric not in METRICS:
            raise DDSMError(f"unknown cost metric {metric!r}; valid: {', '.join(METRICS)}")
        e = self.entry(width, resolution, batch)
        return float(e.macs if metric == "macs" else e.latency_s)

    def cost_model(self, metric: str = "macs", widths: Sequence[float] | None = None,
                   sides: Sequence[int] | None = None, batch: int | None = None) -> CostModel:
        """The :class:`~ddsm.cost.model.CostModel` of ``metric`` over ``widths`` x ``sides`` at ``batch``.

        Defaults: every width of the table; without ``sides``, a width-only
        model at the training size; the table's default batch.
        """
        if metric not in METRICS:
            raise DDSMError(f"unknown cost metric {metric!r}; valid: {', '.join(METRICS)}")
        widths = self.widths if widths is None else widths
        keys = [(w, r) for w in widths for r in (sides or (None,))]
        return CostModel.from_mapping({(w if r is None else (w, r)): self.cost(w, r, metric, batch) for w, r in keys},
                                      widths, sides, unit=metric,
                                      batch=self.check_batch(batch) if metric == "latency" else None)

    def with_cached(self, model: CostModel, level: int, metric: str = "macs", batch: int | None = None) -> CostModel:
        """``model`` (this table's, of ``metric``) plus the cached call at ``level`` of each of its widths."""
        return model.with_cached({w: float(getattr(self.entry(w, None, batch if metric == "latency" else None, level),
                                                   "macs" if metric == "macs" else "latency_s"))
                                  for w in model.widths}, level)

    def schedule_cost(self, widths: Sequence[float], metric: str = "macs",
                      resolutions: int | Sequence[int] | None = None, batch: int | None = None) -> float:
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
        model = self.cost_model(metric, sorted({self.entry(w, r, batch).width for w, r in zip(widths, resolutions)}),
                                sides, batch)
        return model.plan_cost(StepPlan(tuple(widths), tuple(self.image_size if r is None else r for r in resolutions)))

    def share_with_decoder(self, share: float, steps: int, metric: str = "macs") -> float:
        """A schedule's cost share of full width over ``steps`` denoiser calls, with the decoder's one call per image
        added to both (the share itself when the model has no decoder). Latency uses the default batch."""
        if self.decoder is None:
            return share
        full = self.full_width_cost(steps, metric)
        d = self.decoder.macs if metric == "macs" else self.decoder.latency_s
        return (share * full + d) / (full + d)

    def full_width_cost(self, steps: int, metric: str = "macs", *, resolution: int | None = None,
                        batch: int | None = None) -> float:
        """Cost of ``steps`` sampling steps all at width 1, the baseline a schedule is compared with."""
        if steps < 1:
            raise DDSMError(f"steps must be positive, got {steps}")
        return steps * self.cost(1.0, resolution, metric, batch)


def search_cost_model(net: "Supernet", widths: Sequence[float], sides: Sequence[int] | None = None, *,
                      unit: str = "macs", table: str | None = None, batch: int | None = None,
                      cache_level: int | None = None) -> CostModel:
    """What a search prices steps with: fvcore MACs, or a cost table's MACs or latency (at ``batch``); with
    ``cache_level``, also a cached call per width (the table's, measured with ``ddsm cost --cache-level``, or
    fvcore's count).

    Latency needs a measured table (``ddsm cost``) holding ``batch``
    (default: the table's own); a table for a resolution space must hold
    every side (``ddsm cost --resolution``).
    """
    if table is not None:
        t = CostTable.load(table, net.config)
        metric = "macs" if unit == "macs" else "latency"
        model = t.cost_model(metric, widths, sides, batch if unit == "latency" else None)
        return model if cache_level is None else t.with_cached(model, cache_level, metric, batch)
    if unit == "latency":
        raise DDSMError("objectives.cost 'latency' needs a measured cost table: ddsm cost --checkpoint ... "
                        "--out FILE, then --cost FILE")
    model = CostModel.count(net, widths, sides)
    return model if cache_level is None else model.count_cached(net, cache_level)


def measure_decoder(codec, config: ModelConfig, *, batch_size: int, repeats: int, warmup: int) -> DecoderCost:
    """fvcore MACs of one decode (:func:`~ddsm.cost.macs.count_decoder_macs`) and the median time of decoding
    ``batch_size`` latents on the codec's own device."""
    g = config.geometry
    device = next(codec.parameters()).device
    z = torch.zeros(batch_size, g.in_channels, g.image_size, g.image_size, device=device)
    lat = time_call(lambda: codec.decode(z), device, batch_size=batch_size, repeats=repeats, warmup=warmup)
    return DecoderCost(macs=count_decoder_macs(codec, g.in_channels, g.image_size), batch_size=batch_size,
                       latency_s=lat.median_s, latency_iqr_s=lat.iqr_s)
