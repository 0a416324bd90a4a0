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
                from ddsm.device import resolve_device  # imports torch: only when needed

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


def make_runner(kind: str, evaluator_factory: EvaluatorFactory, *, decode: Callable[[Genome], StepPlan],
                quality: str, chunk_size: int = 4, workers: int = 1, address: str | None = None,
                device: str = "auto", **ray_options: Any) -> Runner:
    """A ``'serial'`` or ``'ray'`` runner (Ray imported only for the latter)."""
    if kind == "serial":
        return SerialRunner(evaluator_factory, decode=decode, quality=quality, chunk_size=chunk_size, device=device)
    if kind == "ray":
        from ddsm.search.ray_runner import RayRunner

        return RayRunner(evaluator_factory, decode=decode, quality=quality, chunk_size=chunk_size, workers=workers,
                         address=address, **ray_options)
    raise DDSMError(f"runner {kind!r} is not one of serial, ray")
