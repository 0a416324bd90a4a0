"""The Evaluator contract the search sees: a batch of schedules in, one row of metrics each out.

Contract of :class:`Evaluator` (implement it to plug in your own metric):

- ``metrics``: the names of the metric columns; every metric is *lower is
  better*.
- ``evaluate(schedules)`` takes :class:`~ddsm.plan.StepPlan`, ``Schedule``
  objects or plain per-step width lists and returns a ``pandas.DataFrame`` with one row per input schedule,
  in input order, holding a float column per metric, a bool ``valid`` and a
  str ``error`` ('' when valid).
- A candidate that cannot be scored (its samples contain NaN or inf, its
  metric comes out NaN) is not an exception: its row has every metric at
  +inf, ``valid`` False and the reason in ``error``, so the search treats it
  as the worst possible and carries on.
- Input that cannot describe a candidate at all (a width the supernet does not
  serve, a schedule of another sampler or length) raises a DDSMError.
- Given the same schedules, an evaluator returns the same numbers whichever
  order or batch they come in, up to float rounding of batched convolutions
  (about 1e-6 relative); candidates of one call share per-sample seeds.

:class:`SamplingEvaluator` does the common part for metrics of samples: it
samples every candidate of a call through
:func:`~ddsm.samplers.batched.generate_many` (shared prefixes, one denoiser
call per width and step) on fixed seeds and hands each candidate's samples to
``score``; with ``cache_mb`` it keeps a :class:`~ddsm.samplers.batched.TrajectoryCache`
across calls. :class:`FIDEvaluator`, :class:`ProxyEvaluator` and
:class:`LinearProxyEvaluator` are the built-in metrics.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from typing import Sequence, Union

import pandas as pd
import torch

from ddsm.checkpoint import Supernet
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.metrics.featurenet import FeatureNet
from ddsm.metrics.fid import FID
from ddsm.metrics.proxy import TeacherProxy
from ddsm.samplers.base import SamplerConfig
from ddsm.samplers.batched import SharingStats, TrajectoryCache, generate_many, step_plan
from ddsm.samplers.loop import make_sampler
from ddsm.plan import StepPlan
from ddsm.samplers.progressive import warn_untrained
from ddsm.schedule import Schedule

Candidate = Union[Schedule, StepPlan, Sequence[float]]


class Evaluator(ABC):
    """Scores a batch of width schedules; see the module docstring for the full contract."""

    #: metric column names, each lower-is-better
    metrics: tuple[str, ...] = ()

    @abstractmethod
    def evaluate(self, schedules: Sequence[Candidate]) -> pd.DataFrame:
        """One row per schedule, in order: a float column per metric, ``valid`` (bool), ``error`` (str)."""

    def invalid_row(self, error: str) -> dict:
        """The row of a candidate that could not be scored: every metric +inf."""
        return {**{m: math.inf for m in self.metrics}, "valid": False, "error": error}


class SamplingEvaluator(Evaluator):
    """Samples every candidate on the same seeds (shared work), then scores each one's samples.

    Subclasses implement :meth:`score`; they may override :meth:`sample` to
    reuse samples they already hold (the proxy's cached teacher).
    """

    def __init__(self, net: Supernet, sampler: SamplerConfig, *, num: int, seed: int = 0, batch_size: int = 256,
                 max_call_images: int | None = 2048, fuse: bool = True, cache_mb: float = 0.0,
                 progress: bool = False, warn_resolutions: bool = True) -> None:
        if num < 2:
            raise DDSMError(f"an evaluator needs at least 2 samples per candidate, got num={num}")
        self.net, self.sampler_config = net, sampler
        self.sampler = make_sampler(NoiseSchedule(net.config.diffusion), sampler)
        self.seeds = list(range(seed, seed + num))
        self.batch_size, self.max_call_images, self.progress = batch_size, max_call_images, progress
        # A fused call grows with the number of distinct states: the linear proxy's 61 probe states x 256 seeds
        # made 15.6k-image calls that held ~7 GB; capped at 2,048 images they fit and ran faster (measured).
        self.fuse = fuse  # one denoiser call per width and step (False: per state, batch-invariant results)
        # States of earlier calls, so a candidate starts after the deepest prefix already computed.
        self.cache = TrajectoryCache(int(cache_mb * 2**20)) if cache_mb > 0 else None
        self.stats = SharingStats()  # accumulated over every call
        self.warn_resolutions = warn_resolutions  # False in searches: they warn once up front instead
        self._warned_sides: set[int] = set()  # sides already warned about (training-free resolutions)
        self.seconds = {"sampling": 0.0, "scoring": 0.0}  # accumulated over every call

    # -- candidates ---------------------------------------------------------------

    def plan(self, schedule: Candidate) -> tuple:
        """The per-step widths of one candidate, checked against the supernet and this evaluator's sampler.

        A candidate with a resolution below the image size at some step comes
        back as (width, side) pairs; a supernet not trained at those sides
        gets a :class:`~ddsm.samplers.progressive.ResolutionWarning`, once.
        """
        if isinstance(schedule, Schedule):
            schedule.check(self.net.config)
            if schedule.sampler != self.sampler_config:
                raise DDSMError(f"schedule is for sampler {schedule.sampler.model_dump()}, but this evaluator samples "
                                f"with {self.sampler_config.model_dump()}")
            schedule = schedule.plan()
        given = StepPlan.of(schedule)
        steps = step_plan(given, self.sampler_config.calls, self.net.model, self.sampler_config.guidance_scale)
        pairs = tuple((w, r) for w, r, *_ in steps)
        sides = {r for _, r in pairs}
        if sides != {self.net.config.geometry.image_size} and self.warn_resolutions and not sides <= self._warned_sides:
            warn_untrained(sorted(sides), self.net.trained_resolutions, stacklevel=4)
            self._warned_sides |= sides
        if given.uncond is not None or given.cached is not None:  # guidance choices and cached steps travel in it
            return dataclasses.replace(StepPlan.of(pairs), uncond=given.uncond, cached=given.cached,
                                       cache_level=given.cache_level)
        if sides == {self.net.config.geometry.image_size}:
            return tuple(w for w, _ in pairs)
        return pairs

    def sample(self, plans: list[tuple[float, ...]]) -> torch.Tensor:
        """Samples (K, N, C, H, W) of every plan, on this evaluator's seeds."""
        return generate_many(self.net.model, self.sampler, plans, self.seeds, batch_size=self.batch_size,
                             max_call_images=self.max_call_images, fuse=self.fuse, cache=self.cache,
                             stats=self.stats, progress=self.progress)

    @abstractmethod
    def score(self, samples: torch.Tensor) -> dict[str, float]:
        """Metrics of one candidate's finite samples (N, C, H, W); keys are ``self.metrics``."""

    # -- the contract ---------------------------------------------------------------

    def evaluate(self, schedules: Sequence[Candidate]) -> pd.DataFrame:
        """Sample all candidates together, score each; unscorable candidates get +inf and an error."""
        plans = [self.plan(s) for s in schedules]
        rows: list[dict] = []
        if plans:
            t0 = time.perf_counter()
            samples = self.sample(plans)
            t1 = time.perf_counter()
            rows = [self._score_one(x) for x in samples]
            self.seconds["sampling"] += t1 - t0
            self.seconds["scoring"] += time.perf_counter() - t1
        return pd.DataFrame(rows, columns=[*self.metrics, "valid", "error"]).astype({"valid": bool, "error": str})

    def _score_one(self, x: torch.Tensor) -> dict:
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            return self.invalid_row(f"samples contain {bad} NaN/inf values of {x.numel()}")
        scores = self.score(x)
        broken = [m for m in self.metrics if not math.isfinite(scores.get(m, math.nan))]
        if broken:
            return self.invalid_row(f"metric {', '.join(broken)} is not finite ({', '.join(str(scores.get(m)) for m in broken)})")
        return {**{m: float(scores[m]) for m in self.metrics}, "valid": True, "error": ""}


class FIDEvaluator(SamplingEvaluator):
    """FID of each candidate's ``num`` samples against the real reference statistics of ``fid``."""

    metrics = ("fid",)

    def __init__(self, net: Supernet, sampler: SamplerConfig, fid: FID, **kw) -> None:
        super().__init__(net, sampler, **kw)
        self.fid = fid

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        return {"fid": self.fid.fid(samples)}


class ProxyEvaluator(SamplingEvaluator):
    """Teacher-relative proxy (mean squared distance to the full-width samples on the same seeds).

    With ``feature_net`` and ``feature_weight`` > 0, a feature-space term is
    added (see :mod:`ddsm.metrics.proxy`) and reported as ``proxy_feature``.
    """

    def __init__(self, net: Supernet, sampler: SamplerConfig, *, feature_net: FeatureNet | None = None,
                 feature_weight: float = 0.0, **kw) -> None:
        super().__init__(net, sampler, **kw)
        self.proxy = TeacherProxy(net.model, self.sampler, self.seeds, feature_net=feature_net,
                                  feature_weight=feature_weight, batch_size=self.batch_size)
        self.metrics = ("proxy", "proxy_pixel") + (("proxy_feature",) if feature_net is not None else ())

    def sample(self, plans: list[tuple[float, ...]]) -> torch.Tensor:
        # The teacher's schedule is never resampled: its cached samples make its proxy exactly 0.
        # On the first call the teacher rides along with the candidates and shares their prefixes.
        todo = [p for p in dict.fromkeys(plans) if not self.proxy.is_teacher(p)]
        if not self.proxy.cached:
            todo.append(self.proxy.teacher_widths)
        fresh = super().sample(todo) if todo else None
        if not self.proxy.cached:
            self.proxy.set_teacher(fresh[-1])
        index = {p: i for i, p in enumerate(todo)}
        return torch.stack([self.proxy.teacher() if self.proxy.is_teacher(p) else fresh[index[p]] for p in plans])

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        return self.proxy.score(samples)
