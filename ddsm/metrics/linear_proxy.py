"""The first-order teacher proxy: a schedule's drift from the teacher, predicted from single-step drifts.

The exact proxy (:mod:`ddsm.metrics.proxy`) samples every candidate. But the
final sample is a smooth function of the perturbations ``e_i`` that narrowing
makes to the denoiser output at each sampling step ``i``; to first order,

    x(schedule) - x_teacher  ~=  sum_i J_i e_i(w_i)  ~=  sum_i delta[i, w_i],

where ``delta[i, w] = x(full width except step i at w) - x_teacher`` is the
drift of the schedule that narrows step ``i`` alone (on the same seeds:
common random numbers). Each ``delta[i, w]`` is sampled once, when a
candidate first needs it; all of them share the teacher's prefix, so the
whole table costs ``(widths - 1) * steps * (steps + 1) / 2`` image
evaluations per sample, about ``(widths - 1) * (steps + 1) / 2`` candidates'
worth. After that a candidate costs ``steps`` tensor additions, no denoiser
call at all:

    proxy_linear = mean over samples, channels and pixels of (sum_i delta[i, w_i])^2

It is exact for a schedule that narrows one step, keeps the cross terms
between steps (a vector sum, not a sum of scalar penalties), and drifts from
the exact proxy as many steps are narrowed together and the perturbations
stop adding linearly; the ``bench_metrics`` experiment measures its rank
agreement with the exact proxy and with FID. Use it as the search's fitness
when evaluations dominate, and confirm the front with the exact proxy or FID.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from ddsm.errors import DDSMError

from ddsm.metrics.evaluator import SamplingEvaluator


class LinearProxyEvaluator(SamplingEvaluator):
    """First-order teacher-relative proxy (see the module docstring); column ``proxy_linear``."""

    metrics = ("proxy_linear",)

    def __init__(self, net, sampler, **kw) -> None:
        super().__init__(net, sampler, **kw)
        self.full = max(net.model.widths)
        self.teacher_plan = (self.full,) * self.sampler_config.calls
        self._teacher: torch.Tensor | None = None
        self._delta: dict[tuple[int, float], torch.Tensor] = {}  # (step, width) -> drift (N, C, H, W)

    def probe_plan(self, step: int, width: float) -> tuple[float, ...]:
        """The schedule that narrows ``step`` alone to ``width``."""
        return tuple(width if i == step else self.full for i in range(len(self.teacher_plan)))

    def prepare(self, plans: Sequence[tuple[float, ...]]) -> int:
        """Sample the single-step drifts these plans need and are not known yet; returns how many were sampled."""
        need = sorted({(i, w) for p in plans for i, w in enumerate(p) if w != self.full} - set(self._delta))
        todo = [self.probe_plan(i, w) for i, w in need]
        if self._teacher is None:
            todo.append(self.teacher_plan)
        if not todo:
            return 0
        x = super().sample(todo)
        if self._teacher is None:
            self._teacher = x[-1]
        for k, key in enumerate(need):
            self._delta[key] = x[k] - self._teacher
        return len(need)

    def predicted_drift(self, plan: Sequence[float]) -> torch.Tensor:
        """``sum_i delta[i, w_i]``: the first-order drift of ``plan``'s samples from the teacher's."""
        drift = torch.zeros_like(self._teacher, dtype=torch.float64)
        for i, w in enumerate(plan):
            if w != self.full:
                drift += self._delta[(i, w)]
        return drift

    def sample(self, plans: list[tuple[float, ...]]) -> torch.Tensor:
        """What this evaluator scores instead of samples: each plan's predicted drift (K, N, C, H, W).

        Samples the missing single-step drifts first (once per evaluator);
        :meth:`SamplingEvaluator.evaluate` then scores each drift, and a
        non-finite one makes its candidate invalid.
        """
        if any(isinstance(e, tuple) for p in plans for e in p):
            raise DDSMError("the linear proxy scores width schedules only, not resolution schedules; "
                            "use the 'proxy' or 'fid' metric")
        if any(getattr(p, "cached", None) is not None for p in plans):
            raise DDSMError("the linear proxy scores width schedules only, not cached steps; use the 'proxy', "
                            "'pixel_kid' or 'fid' metric")
        if any(getattr(p, "uncond", None) is not None for p in plans):
            raise DDSMError("the linear proxy scores width schedules only, not per-step guidance choices; "
                            "use the 'proxy', 'pixel_kid' or 'fid' metric")
        self.prepare(plans)
        return torch.stack([self.predicted_drift(p) for p in plans])

    def score(self, drift: torch.Tensor) -> dict[str, float]:
        value = float(drift.pow(2).mean())
        return {"proxy_linear": value if math.isfinite(value) else math.inf}
