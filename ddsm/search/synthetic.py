"""A cheap, deterministic stand-in for a real evaluator: exercise the search without a supernet.

Quality of a per-step width list ``w`` (noisiest step first, T steps)::

    q(w) = sum_t a_t (1 - w_t)^2 + c * sum_t (1 - w_t)(1 - w_{t+1}),   a_t = 0.2 + 1.8 * t / (T - 1)

Narrowing the clean (late) steps hurts more than narrowing the noisy ones,
as observed for real supernets, and the coupling term ``c`` makes the
additive sensitivity model of :mod:`ddsm.search.seeding` approximate rather
than exact. It is a pure function of the widths, so it gives the same number
whichever process, worker or batch evaluates it — what a real evaluator
promises up to float rounding. Tests, demos and benchmarks of the search
machinery (serial vs Ray, resume) use it; it lives in the package so Ray
workers can import it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd


class SyntheticEvaluator:
    """Evaluator with the ``evaluate(list of plans) -> DataFrame`` contract and a closed-form quality of the widths."""

    def __init__(self, *, metric: str = "proxy", coupling: float = 0.3, delay: float = 0.0,
                 invalid_below: float | None = None, device: str = "cpu") -> None:
        self.metric = metric  # name of the quality column
        self.coupling = coupling  # strength of the neighbouring-step interaction
        self.delay = delay  # seconds slept per candidate (makes runs interruptible in tests)
        self.invalid_below = invalid_below  # candidates with a mean width below this are reported invalid
        self.device = device  # recorded only; nothing runs on it
        self.calls: list[list[tuple[float, ...]]] = []  # every batch seen, in order

    def quality(self, widths: Sequence[float]) -> float:
        """The closed-form quality of one width list (lower is better)."""
        w = np.asarray(widths, dtype=np.float64)
        n = len(w)
        a = 0.2 + 1.8 * np.arange(n) / max(n - 1, 1)
        gap = 1.0 - w
        return float((a * gap**2).sum() + self.coupling * (gap[:-1] * gap[1:]).sum())

    def evaluate(self, schedules: Sequence[Sequence[float]]) -> pd.DataFrame:  # StepPlans iterate as widths
        """One row per schedule, in order: the metric, ``valid`` and ``error``."""
        batch = [tuple(float(x) for x in s) for s in schedules]
        self.calls.append(batch)
        rows = []
        for s in batch:
            if self.delay:
                time.sleep(self.delay)
            if self.invalid_below is not None and np.mean(s) < self.invalid_below:
                rows.append({self.metric: float("inf"), "valid": False, "error": "mean width below invalid_below"})
            else:
                rows.append({self.metric: self.quality(s), "valid": True, "error": ""})
        return pd.DataFrame(rows, columns=[self.metric, "valid", "error"])


@dataclass(frozen=True)
class SyntheticEvaluatorFactory:
    """Picklable factory: ``factory(device=...)`` builds a :class:`SyntheticEvaluator`."""

    metric: str = "proxy"
    coupling: float = 0.3
    delay: float = 0.0
    invalid_below: float | None = None

    def __call__(self, *, device: str = "cpu") -> SyntheticEvaluator:
        return SyntheticEvaluator(metric=self.metric, coupling=self.coupling, delay=self.delay,
                                  invalid_below=self.invalid_below, device=device)


def additive_table(n_genes: int, n_widths: int, seed: int) -> np.ndarray:
    """Degradation ``d[g, j]`` of gene g at width index j, drawn from ``seed``: decreasing in j, 0 at the full width.

    Scales vary per gene (log-normal) and grow towards the late (clean) genes.
    """
    rng = np.random.default_rng([seed, n_genes, 0xF207])
    scale = np.exp(rng.normal(0.0, 0.6, size=n_genes)) * (0.3 + 1.7 * np.arange(n_genes) / max(n_genes - 1, 1))
    steps = rng.uniform(0.2, 1.0, size=(n_genes, n_widths - 1)) * np.linspace(2.0, 1.0, n_widths - 1)
    d = np.zeros((n_genes, n_widths))
    d[:, : n_widths - 1] = np.cumsum(steps[:, ::-1], axis=1)[:, ::-1] * scale[:, None]
    return d


class AdditiveEvaluator:
    """Evaluator whose quality is exactly additive over genes: ``sum_g table[g, width index of gene g]``.

    Its exact Pareto front is known (:func:`ddsm.search.seeding.additive_front`
    on the table and the gene costs), so a search can be scored against it.
    ``lengths`` are the steps per gene (``SearchConfig.segment_lengths``).
    """

    def __init__(self, table: np.ndarray, widths: Sequence[float], lengths: Sequence[int], *,
                 metric: str = "proxy", device: str = "cpu") -> None:
        self.table, self.widths, self.metric, self.device = np.asarray(table, float), list(widths), metric, device
        self.first_step = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    def quality(self, widths: Sequence[float]) -> float:
        w = np.asarray(list(widths), dtype=np.float64)[self.first_step]
        j = np.searchsorted(self.widths, w)
        return float(self.table[np.arange(len(j)), j].sum())

    def evaluate(self, schedules: Sequence[Sequence[float]]) -> pd.DataFrame:
        rows = [{self.metric: self.quality(s), "valid": True, "error": ""} for s in schedules]
        return pd.DataFrame(rows, columns=[self.metric, "valid", "error"])


@dataclass(frozen=True, eq=False)
class AdditiveEvaluatorFactory:
    """Picklable factory: ``factory(device=...)`` builds an :class:`AdditiveEvaluator`."""

    table: np.ndarray
    widths: tuple[float, ...]
    lengths: tuple[int, ...]
    metric: str = "proxy"

    def __call__(self, *, device: str = "cpu") -> AdditiveEvaluator:
        return AdditiveEvaluator(self.table, self.widths, self.lengths, metric=self.metric, device=device)
