"""Latency of one denoiser call at a given width and resolution, timed as sampling runs the supernet.

Median wall-clock seconds of one forward pass of ``batch_size`` images on the
*slimmable supernet* after ``set_active_width`` (slicing overhead included),
under ``torch.no_grad``, after warm-up calls, widths timed round-robin, with
the torch thread count recorded beside it.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ddsm.cost.macs import _probe, check_resolution
from ddsm.device import resolve_device
from ddsm.errors import DDSMError
from ddsm.nn.backbone import Backbone


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


def latency_stats(samples_s: list[float], batch_size: int) -> LatencyStats:
    """Median and interquartile range of timed passes of ``batch_size`` images."""
    q1, q3 = np.percentile(samples_s, [25, 75])
    return LatencyStats(median_s=statistics.median(samples_s), iqr_s=float(q3 - q1), samples_s=tuple(samples_s),
                        batch_size=batch_size, threads=torch.get_num_threads())


def time_call(call, device: torch.device, *, batch_size: int, repeats: int, warmup: int) -> LatencyStats:
    """Time ``call()`` (a pass over ``batch_size`` images on ``device``): ``warmup`` untimed, then ``repeats`` timed."""
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return latency_stats(times, batch_size)


@contextlib.contextmanager
def _sampling_state(model: Backbone) -> Iterator[Backbone]:
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
    model: Backbone,
    widths: Sequence[float],
    resolution: int | None = None,
    *,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    cache_level: int | None = None,
) -> dict[float, LatencyStats]:
    """Time ``model`` (on its own device) at each width as sampling runs it: ``set_active_width``, then forward.

    Widths are timed round-robin, one pass each per round, so a load that
    drifts over the run (another job, thermal throttling) hits every width
    alike instead of whichever was timed last. With ``cache_level``, each pass
    is a cached call (``forward_reuse`` on features a full call filled first).
    """
    _check_timing(batch_size, repeats, warmup)
    resolution = check_resolution(model, resolution)
    widths = [model.check_width(w) for w in widths]
    device = next(model.parameters()).device
    x, t = _probe(model, resolution, batch_size, device)
    times: dict[float, list[float]] = {w: [] for w in widths}
    with _sampling_state(model), torch.no_grad():
        deep = {}
        if cache_level is not None:
            for w in widths:
                model.set_active_width(w)
                deep[w] = model.forward_reuse(x, t, level=cache_level, deep=None)[1]
        for i in range(warmup + repeats):
            for w in widths:
                model.set_active_width(w)
                _sync(device)
                start = time.perf_counter()
                if cache_level is None:
                    model(x, t)
                else:
                    model.forward_reuse(x, t, level=cache_level, deep=deep[w])
                _sync(device)
                if i >= warmup:
                    times[w].append(time.perf_counter() - start)
    return {w: latency_stats(ts, batch_size) for w, ts in times.items()}


def measure_latency(
    model: Backbone,
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
