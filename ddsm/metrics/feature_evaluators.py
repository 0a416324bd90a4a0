"""Search objectives beyond FID: KID against the data (in the feature net's space and on pixels), FID against the teacher.

All are :class:`~ddsm.metrics.evaluator.SamplingEvaluator` subclasses, so
a search can minimise them like any registered metric; the verdict
(:mod:`ddsm.metrics.verdict`) reports the same statistics with intervals.
"""

from __future__ import annotations

import numpy as np
import torch

from ddsm.metrics.distribution import Candidate, Reference, embed, pixel_reference, pixels
from ddsm.metrics.evaluator import SamplingEvaluator
from ddsm.metrics.featurenet import FeatureNet
from ddsm.metrics.verdict import TEACHER_NUM, TEACHER_SEED
from ddsm.plan import StepPlan
from ddsm.samplers.batched import generate_many


class _FeatureEvaluator(SamplingEvaluator):
    def __init__(self, net, sampler, featurenet: FeatureNet, **kw) -> None:
        super().__init__(net, sampler, **kw)
        self.featurenet = featurenet.double().eval()

    def features(self, x: torch.Tensor) -> np.ndarray:
        return embed(self.featurenet, x)[0]


class KIDEvaluator(_FeatureEvaluator):
    """Unbiased KID of each candidate's samples against the real images (``real``: N, C, H, W)."""

    metrics = ("kid",)

    def __init__(self, net, sampler, featurenet: FeatureNet, real: torch.Tensor, **kw) -> None:
        super().__init__(net, sampler, featurenet, **kw)
        self.reference = Reference(self.features(real), name="real data")

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        c = Candidate(self.features(samples), self.reference)
        return {"kid": c.kid()(np.ones(len(samples)))}


class PixelKIDEvaluator(SamplingEvaluator):
    """Unbiased KID of each candidate's samples on raw pixels against the real images (``real``: N, C, H, W).

    No feature net: it needs only the data. It is the search objective that
    sees what the late, least noisy steps decide (see
    :mod:`ddsm.metrics.distribution`).
    """

    metrics = ("pixel_kid",)

    def __init__(self, net, sampler, real: torch.Tensor, **kw) -> None:
        super().__init__(net, sampler, **kw)
        self.reference = pixel_reference(real)

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        c = Candidate(pixels(samples), self.reference)
        return {"pixel_kid": c.kid()(np.ones(len(samples)))}


class TeacherFIDEvaluator(_FeatureEvaluator):
    """FID of each candidate's samples against full-width samples on ``TEACHER_NUM`` other seeds."""

    metrics = ("teacher_fid",)

    def __init__(self, net, sampler, featurenet: FeatureNet, **kw) -> None:
        super().__init__(net, sampler, featurenet, **kw)
        self._reference: Reference | None = None

    @property
    def reference(self) -> Reference:
        """The teacher's samples on the teacher seeds, embedded (sampled on first use)."""
        if self._reference is None:
            full = StepPlan((max(self.net.config.geometry.widths),) * self.sampler_config.calls)
            x = generate_many(self.net.model, self.sampler, [full], list(range(TEACHER_SEED, TEACHER_SEED + TEACHER_NUM)),
                              batch_size=self.batch_size, fuse=False)[0]
            self._reference = Reference(self.features(x), name="teacher reference")
        return self._reference

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        c = Candidate(self.features(samples), self.reference)
        return {"teacher_fid": c.fid()(np.ones(len(samples)))}
