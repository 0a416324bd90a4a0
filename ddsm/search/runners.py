"""Runners map the evaluator over a batch of genomes: in this process, or on a Ray actor pool.

A runner is called with genomes (tuples of width indices) and returns one
dict per genome, in input order, holding at least the quality column, a bool
``valid``, ``seconds`` and ``worker``. Genomes are cut into chunks of
``chunk_size`` consecutive genomes; each chunk is one ``evaluate`` call of
the evaluator (a batched evaluator shares work inside a call), and
``on_result(start, rows)`` reports every chunk as it completes.

Whichever runner ran, the result is the same: chunks are cut the same way,
results come back in input order, and an evaluator must give a candidate the
same number whatever worker evaluates it (the evaluator contract; real
evaluators keep it up to float rounding of batched convolutions).

The evaluator factory is a picklable callable, ``factory(device=...)``,
returning an object with ``evaluate(list of StepPlan) -> pandas.DataFrame``
(a :class:`~ddsm.plan.StepPlan` iterates as its per-step widths, so an
evaluator of plain width lists works unchanged). Each worker calls it once. The Ray runner is imported
lazily: nothing in :mod:`ddsm.search` imports Ray at module level.
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol, Sequence

import pandas as pd
import torch

from ddsm.device import resolve_device
from ddsm.errors import DDSMError
from ddsm.plan import StepPlan

Genome = tuple[int, ...]
#: called once per completed chunk with the index of its first genome and its rows
ResultCallback = Callable[[int, list[dict]], None]


class EvaluatorFactory(Protocol):
    """Builds an evaluator once per worker; must be picklable for the Ray runner."""

    def __call__(self, *, device: str) -> Any: ...


def evaluate_chunk(evaluator: Any, plans: list[StepPlan], *, quality: str, worker: str) -> list[dict]:
    """Call ``evaluator.evaluate`` on one chunk and check its DataFrame; one plain dict per candidate."""
    t0 = time.perf_counter()
    df = evaluator.evaluate(plans)
    elapsed = time.perf_counter() - t0
    if not isinstance(df, pd.DataFrame):
        raise DDSMError(f"evaluator.evaluate returned {type(df).__name__}; it must return a pandas.DataFrame "
                        "with one row per schedule")
    if len(df) != len(plans):
        raise DDSMError(f"evaluator returned {len(df)} rows for {len(plans)} schedules; it must return one per schedule")
    if quality not in df.columns:
        raise DDSMError(f"evaluator returned columns {list(df.columns)} without {quality!r}, the quality objective "
                        "of this search space (objectives.quality)")
    rows = []
    for rec in df.to_dict(orient="records"):
        row = {k: _plain(v) for k, v in rec.items()}
        q = float(row[quality])
        row[quality] = q
        row["valid"] = bool(row.get("valid", math.isfinite(q)))
        row.setdefault("seconds", elapsed / max(len(plans), 1))
        row["worker"] = worker
        rows.append(row)
    return rows


def sharing_of(evaluator: Any) -> dict[str, int] | None:
    """An evaluator's ``SharingStats`` as a plain dict, or None if it keeps none."""
    stats = getattr(evaluator, "stats", None)
    fields = getattr(stats, "__dataclass_fields__", None)
    return {k: int(getattr(stats, k)) for k in fields} if fields else None


def _plain(v: Any) -> Any:
    # numpy scalars -> Python scalars, so rows pickle small and compare exactly
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v


class Runner(ABC):
    """Maps an evaluator over genomes; see the module docstring for the contract."""

    #: evaluations that can run at once
    workers: int = 1

    def __init__(self, evaluator_factory: EvaluatorFactory, *, decode: Callable[[Genome], StepPlan],
                 quality: str, chunk_size: int = 4) -> None:
        if chunk_size < 1:
            raise DDSMError(f"chunk_size {chunk_size} must be at least 1")
        self.evaluator_factory = evaluator_factory
        self.decode = decode  # genome -> its StepPlan (SearchConfig.decode)
        self.quality = quality  # name of the quality column
        self.chunk_size = chunk_size

    def chunks(self, genomes: Sequence[Genome]) -> list[tuple[int, list[Genome]]]:
        """``(start, genomes)`` of every chunk, in order."""
        g = list(genomes)
        return [(i, g[i:i + self.chunk_size]) for i in range(0, len(g), self.chunk_size)]

    @abstractmethod
    def __call__(self, genomes: Sequence[Genome], *, on_result: ResultCallback | None = None) -> list[dict]:
        """Evaluate ``genomes``; one dict per genome, in input order."""

    def sharing(self) -> dict[str, int] | None:
        """Denoiser work of the evaluators so far (``SharingStats`` fields summed over workers), if they count it."""
        return None

    def close(self) -> None:
        """Release workers (and anything the runner started)."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialRunner(Runner):
    """Evaluates chunk after chunk in this process with one evaluator, built on first use."""

    def __init__(self, evaluator_factory: EvaluatorFactory, *, decode: Callable[[Genome], StepPlan],
                 quality: str, chunk_size: int = 4, device: str = "auto") -> None:
        super().__init__(evaluator_factory, decode=decode, quality=quality, chunk_size=chunk_size)
        self.device = device
        self._evaluator: Any = None
        self.worker = f"serial:{os.getpid()}"

    @property
    def evaluator(self) -> Any:
        """The evaluator (built on first use, on the resolved device)."""
        if self._evaluator is None:
            device = self.device
            if device == "auto":
                device = str(resolve_device("auto"))
            self._evaluator = self.evaluator_factory(device=device)
        return self._evaluator

    def sharing(self) -> dict[str, int] | None:
        return sharing_of(self._evaluator)

    def __call__(self, genomes: Sequence[Genome], *, on_result: ResultCallback | None = None) -> list[dict]:
        out: list[dict] = []
        for start, chunk in self.chunks(genomes):
            rows = evaluate_chunk(self.evaluator, [self.decode(g) for g in chunk], quality=self.quality,
                                  worker=self.worker)
            if on_result is not None:
                on_result(start, rows)
            out.extend(rows)
        return out


RUNNERS = ("serial", "ray")


def cores() -> int:
    """CPU cores this process may run on (what a local Ray is started with)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a Ray address ``HOST:PORT`` (optionally ``ray://HOST:PORT``); one-line DDSMError if not."""
    hostport = str(address).split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in hostport):
        raise DDSMError(f"Ray address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379) or 'auto'")
    return host, int(port)


def check_runner_options(kind: str, *, workers: int, chunk_size: int, address: str | None,
                         gpus_per_worker: float | None, device: str | None) -> None:
    """Refuse, in one line (DDSMError), runner options that cannot work; touches nothing, starts nothing.

    Checked: the runner is ``serial`` or ``ray``; ``workers`` and ``chunk_size`` are at least 1, and a local Ray
    has no more workers than this machine has CPU cores (fractional CPUs spawned workers without end);
    ``gpus_per_worker`` (None: the Ray runner decides) is a finite number >= 0; ``address`` is ``HOST:PORT``
    or ``'auto'`` and only given with the Ray runner; ``device`` can be used here (``--device cuda`` on a
    machine without CUDA is refused). With ``address`` the evaluators run on the cluster's machines, so there
    only the device's spelling is checked, not whether this machine has it.
    """
    if kind not in RUNNERS:
        raise DDSMError(f"runner {kind!r} is not one of {', '.join(RUNNERS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DDSMError(f"workers {workers!r} must be a whole number of at least 1")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DDSMError(f"chunk_size {chunk_size!r} must be a whole number of at least 1")
    if gpus_per_worker is not None:
        g = gpus_per_worker
        if kind != "ray":
            raise DDSMError(f"--gpus-per-worker {g!r} sets GPUs per Ray actor, but the runner is {kind!r}; "
                            "use --runner ray or leave --gpus-per-worker out")
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0:
            raise DDSMError(f"gpus_per_worker {g!r} must be a number >= 0 (0: CPU only)")
        if g > 1 and g != int(g):
            raise DDSMError(f"gpus_per_worker {g!r} must be 0 (CPU only), a fraction in (0, 1] or a whole number")
    if kind == "ray" and address is None and workers > cores():
        raise DDSMError(f"workers {workers} exceeds this machine's {cores()} CPU cores (a local Ray worker "
                        f"needs at least one); use workers <= {cores()}")
    if address is not None:
        if kind != "ray":
            raise DDSMError(f"--address {address!r} joins a Ray cluster, but the runner is {kind!r}; "
                            "use --runner ray or leave --address out")
        if address != "auto":
            parse_address(address)
    if device is not None and str(device) != "auto":
        if address is not None:  # only the spelling: the cluster's machines, not this one, run the evaluators
            try:
                torch.device(device)
            except (RuntimeError, TypeError):
                raise DDSMError(f"device {device!r} is not a torch device; valid: auto, cpu, cuda, cuda:N") from None
        else:
            resolve_device(device)


def make_runner(kind: str, evaluator_factory: EvaluatorFactory, *, decode: Callable[[Genome], StepPlan],
                quality: str, chunk_size: int = 4, workers: int = 1, address: str | None = None,
                device: str = "auto", **ray_options: Any) -> Runner:
    """A ``'serial'`` or ``'ray'`` runner (Ray imported only for the latter)."""
    if kind == "serial":
        return SerialRunner(evaluator_factory, decode=decode, quality=quality, chunk_size=chunk_size, device=device)
    if kind == "ray":
        # lazy: the Ray runner's module (which imports this one) loads only when a Ray runner is built
        from ddsm.search.ray_runner import RayRunner

        return RayRunner(evaluator_factory, decode=decode, quality=quality, chunk_size=chunk_size, workers=workers,
                         address=address, **ray_options)
    raise DDSMError(f"runner {kind!r} is not one of serial, ray")
