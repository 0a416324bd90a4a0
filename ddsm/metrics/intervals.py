"""Bootstrap confidence intervals of sample metrics, alone and paired.

Every verdict metric is a statistic of one candidate's N samples (drawn on
N fixed seeds). Resampling the *seeds* with replacement gives its basic
(pivotal) bootstrap interval ``[2 v - q_hi, 2 v - q_lo]`` from the
resamples' quantiles: unlike the percentile interval it corrects the bias
that resampling itself adds (duplicated samples inflate FID by several
units, enough to put the percentile interval above the estimate); comparing two candidates sampled on the same
seeds, the same resampled seeds go to both (a paired bootstrap), so the
interval of their difference carries only what differs between them. A
candidate compared with itself has a difference of exactly 0 in every draw.

A statistic is a function of per-seed *weights*: ``counts[i]`` is how often
seed i was drawn (all ones for the point estimate), so statistics that
need every pair of samples (KID) can leave out the pairs of a seed with
itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ddsm.errors import DDSMError

#: a statistic of one candidate's samples, given how often each seed was drawn
Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its basic bootstrap interval."""

    value: float  # the statistic on all N samples
    low: float  # lower end of the interval
    high: float  # upper end of the interval
    n: int  # samples (seeds) it rests on
    level: float = 0.95  # coverage of the interval

    def excludes(self, x: float = 0.0) -> bool:
        """Whether ``x`` lies outside the interval (for a difference: significant at this level)."""
        return not (self.low <= x <= self.high)

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def bootstrap_counts(n: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n) counts of each seed in ``draws`` resamples of n seeds with replacement, from one seeded generator."""
    if n < 2 or draws < 1:
        raise DDSMError(f"a bootstrap needs at least 2 samples and 1 draw, got {n} samples and {draws} draws")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(draws, n))
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


@dataclass(frozen=True)
class Draws:
    """A statistic of one candidate: its value on all samples and on every resample (the same resamples for all)."""

    value: float
    draws: np.ndarray  # one value per resample
    n: int

    @classmethod
    def of(cls, stat: Statistic, n: int, counts: np.ndarray) -> "Draws":
        """Evaluate ``stat`` on all n samples and on every row of ``counts``."""
        return cls(value=float(stat(np.ones(n))), draws=np.array([stat(c) for c in counts], dtype=np.float64), n=n)

    def interval(self, level: float = 0.95) -> Interval:
        """The basic bootstrap interval."""
        return _interval(self.value, self.draws, self.n, level)

    def centred(self) -> "Draws":
        """The resamples shifted by their bootstrap bias (their mean minus the full-sample value).

        A resample drawn with replacement repeats seeds, which biases a statistic of the whole set (FID, KID,
        precision, recall): on digits at 1,000 samples a resample's FID sits several units above the
        full-sample FID, so the basic interval of FID itself lands beside its own value. Centring keeps the
        resamples' spread and removes that shift. Paired differences need none of it: both sides share the
        resamples and nearly the same bias.
        """
        finite = self.draws[np.isfinite(self.draws)]
        shift = float(finite.mean()) - self.value if len(finite) else 0.0
        return Draws(value=self.value, draws=self.draws - shift, n=self.n)

    def minus(self, other: "Draws", level: float = 0.95) -> Interval:
        """The paired interval of ``self - other`` (both drawn on the same seeds and resamples)."""
        if other.n != self.n or other.draws.shape != self.draws.shape:
            raise DDSMError("a paired difference needs both candidates on the same seeds and resamples")
        return _interval(self.value - other.value, self.draws - other.draws, self.n, level)


def _interval(value: float, values: np.ndarray, n: int, level: float) -> Interval:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return Interval(value=float(value), low=float("nan"), high=float("nan"), n=n, level=level)
    a = (1.0 - level) / 2.0
    q_low, q_high = np.quantile(finite, [a, 1.0 - a])
    return Interval(value=float(value), low=float(2 * value - q_high), high=float(2 * value - q_low), n=n,
                    level=level)


def interval(stat: Statistic, n: int, counts: np.ndarray, *, level: float = 0.95) -> Interval:
    """``stat`` on all n samples, and its interval over the resamples in ``counts``."""
    return Draws.of(stat, n, counts).interval(level)


def paired_interval(a: Statistic, b: Statistic, n: int, counts: np.ndarray, *, level: float = 0.95) -> Interval:
    """``a - b`` for two candidates on the same n seeds, with the same resamples given to both."""
    return Draws.of(a, n, counts).minus(Draws.of(b, n, counts), level)


def weighted_mean(x: np.ndarray, counts: np.ndarray) -> float:
    """Mean of per-sample values ``x`` under seed counts."""
    return float(np.dot(counts, x) / counts.sum())
