"""Two-stage (multi-fidelity) evaluation: a cheap screen scores every offspring, the best per cost bin are judged.

The quality a search should rank by (a distribution metric against the real
data, such as pixel KID) needs hundreds of samples per candidate to rank
candidates; the teacher-relative proxy needs 64 but rewards what the verdict
does not judge (each seed's identity, settled by the early steps). With a
``screen`` in the search space, every offspring generation runs in two stages:

1. **screen**: every new genome is scored by the screen metric (default:
   the proxy on 64 seeds);
2. **promote**: the feasible (within budget), validly screened genomes are
   split into ``bins`` equal-width bins of cost share between the cheapest
   schedule and the budget, and the ``promote`` best by the screen metric in
   each bin (ties: the genome's text, so the choice never depends on order)
   go on;
3. **judge**: the promoted genomes are scored by the search's quality metric
   on ``evaluator.num_samples`` seeds. Only they can enter the front; the rest
   are logged as invalid ("screened out"), so NSGA-II ranks them below every
   valid genome (among themselves, by cost). A genome screened out once
   stays so: the log answers it if a later generation asks again.

A genome the screen marked invalid (NaN samples, a non-finite metric) is
never promoted. The seeding probes and the first population are judged in
full: the sensitivity model and the first front rest on the real objective.
Both stages run on the same runner (one worker pool): a work item is the
genome with its stage appended, and :class:`StagedEvaluator` holds both
evaluators, each with its own trajectory cache of ``trajectory_cache_mb``
(so a worker may hold twice that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ddsm.plan import StepPlan

SCREEN, JUDGE = 0, 1  # the stage gene appended to a genome sent to a staged runner


@dataclass(frozen=True)
class StagedPlan:
    """A candidate's plan and the stage that scores it (what a staged runner hands its evaluator)."""

    plan: StepPlan
    stage: int  # SCREEN or JUDGE


@dataclass(frozen=True)
class StagedDecode:
    """A runner's decode for work items ``genome + (stage,)``, from the space's decode of genomes."""

    decode: Callable[[Sequence[int]], StepPlan]  # the search space's decode of a genome

    def __call__(self, item: Sequence[int]) -> StagedPlan:
        return StagedPlan(self.decode(tuple(item[:-1])), int(item[-1]))


class StagedEvaluator:
    """Scores a chunk of :class:`StagedPlan` (all of one stage) with the screen's or the judge's evaluator.

    The judge's columns always come back, NaN and valid-by-screen in the
    screen stage, so a runner's check for the quality column holds in both.
    """

    def __init__(self, screen: Any, judge: Any, *, screen_metric: str, quality: str) -> None:
        self.screen, self.judge = screen, judge
        self.screen_metric, self.quality = screen_metric, quality
        self.metrics = tuple(judge.metrics)

    @property
    def stats(self):
        """Denoiser work of both stages (``SharingStats`` summed), if both count it."""
        a, b = getattr(self.screen, "stats", None), getattr(self.judge, "stats", None)
        if a is None or b is None:
            return None
        return type(a)(**{k: getattr(a, k) + getattr(b, k) for k in a.__dataclass_fields__})

    def evaluate(self, items: Sequence[StagedPlan]) -> pd.DataFrame:
        stages = {int(i.stage) for i in items}
        if len(stages) > 1:
            raise ValueError(f"a staged chunk holds one stage, got stages {sorted(stages)}")
        plans = [i.plan for i in items]
        if stages == {JUDGE} or not items:
            return self.judge.evaluate(plans)
        df = self.screen.evaluate(plans)
        out = pd.DataFrame({"screen": df[self.screen_metric].astype(float), "valid": df["valid"].astype(bool),
                            "error": df["error"].astype(str)})
        out[self.quality] = math.nan
        return out


@dataclass(frozen=True)
class StagedEvaluatorFactory:
    """Builds a :class:`StagedEvaluator` from a screen factory and a judge factory (once per worker)."""

    screen: Any  # factory of the screen metric's evaluator
    judge: Any  # factory of the search quality's evaluator

    @property
    def quality(self) -> str:
        """The search's quality column (the judge's)."""
        return self.judge.quality

    def __call__(self, *, device: str = "auto") -> StagedEvaluator:
        return StagedEvaluator(self.screen(device=device), self.judge(device=device),
                               screen_metric=self.screen.quality, quality=self.judge.quality)


def promote(shares: Sequence[float], screen: Sequence[float], valid: Sequence[bool], keys: Sequence[str], *,
            low: float, budget: float, bins: int, per_bin: int) -> list[int]:
    """Indices of the genomes to judge: the ``per_bin`` lowest screen values in each cost-share bin.

    Bins split ``[low, budget]`` into ``bins`` equal parts (a share on an
    edge goes to the upper bin; the budget itself to the last). Genomes over
    budget, invalid, or with a non-finite screen value are never promoted.
    Returned in input order.
    """
    width = (budget - low) / bins if budget > low else 1.0
    chosen: dict[int, list[tuple[float, str, int]]] = {}
    for i, (s, q, ok, k) in enumerate(zip(shares, screen, valid, keys)):
        if not ok or not math.isfinite(float(q)) or float(s) > budget + 1e-12:
            continue
        # the tolerance puts a share on an edge in the upper bin despite rounding ((0.3 - 0.1) / 0.1 = 1.999...)
        b = min(bins - 1, max(0, int(np.floor((float(s) - low) / width + 1e-9))))
        chosen.setdefault(b, []).append((float(q), str(k), i))
    picked = sorted(i for members in chosen.values() for _, _, i in sorted(members)[:per_bin])
    return picked
