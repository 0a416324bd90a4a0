"""The teacher-relative proxy: how far a schedule's samples land from the full-width net's.

With common random numbers (every candidate and the teacher start from the
same per-sample noise and, for stochastic samplers, get the same step noise),
a slimmed schedule's sample i is a perturbation of the teacher's sample i. The
proxy measures that perturbation directly:

    proxy = mean over samples, channels and pixels of (x_candidate - x_teacher)^2

optionally plus ``feature_weight`` times the mean over samples of the squared
feature-space distance per feature (``|f(x_cand) - f(x_teach)|^2 / num_features``)
in a :class:`~ddsm.metrics.featurenet.FeatureNet`, which weighs changes by
how much they alter what the image shows rather than by raw pixel energy.

Because it compares paired samples rather than two distributions, its
sampling noise is far smaller than FID's, so a few dozen samples may rank
schedules that FID needs hundreds or thousands for ("relative FID" in
Flexiffusion makes the same bet; how well the two agree is measured by the
``bench_metrics`` experiment). It is blind to failures the teacher shares, and it penalises
any departure from the teacher, even a better-looking one; FID confirms the front.

The teacher is the widest net at every step. Its samples are computed once,
cached on the proxy object, and used as they are for any candidate equal to
the teacher's schedule, so the teacher's own proxy is exactly 0 (sampling it
again in another batch would differ by float rounding only).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ddsm.config import width_index
from ddsm.errors import DDSMError
from ddsm.metrics.featurenet import FeatureNet
from ddsm.nn.backbone import Backbone
from ddsm.samplers.base import Sampler
from ddsm.samplers.batched import SharingStats, generate_many
from ddsm.samplers.loop import visited_timesteps


class TeacherProxy:
    """Teacher samples on fixed seeds, cached, and the distance of candidate samples to them."""

    def __init__(
        self,
        model: Backbone,
        sampler: Sampler,
        seeds: Sequence[int],
        *,
        feature_net: FeatureNet | None = None,
        feature_weight: float = 0.0,
        batch_size: int = 256,
    ) -> None:
        if feature_weight < 0:
            raise DDSMError(f"feature_weight {feature_weight} must be >= 0")
        if feature_weight > 0 and feature_net is None:
            raise DDSMError(f"feature_weight {feature_weight} needs a feature net for the feature-space term")
        self.model, self.sampler, self.seeds = model, sampler, list(seeds)
        self.feature_net = feature_net.eval() if feature_net is not None else None
        self.feature_weight = float(feature_weight)
        self.batch_size = batch_size
        self.teacher_widths = (max(model.widths),) * len(visited_timesteps(sampler))
        self._teacher: torch.Tensor | None = None
        self._teacher_features: torch.Tensor | None = None
        self.external = False  # set_teacher(..., external=True): the reference is another model's samples

    @property
    def cached(self) -> bool:
        """Whether the teacher samples have been computed."""
        return self._teacher is not None

    def set_teacher(self, samples: torch.Tensor, *, external: bool = False) -> None:
        """Cache teacher samples computed elsewhere (e.g. alongside candidates, sharing their prefixes).

        ``external``: the samples come from another model or sampler on the
        same seeds (the teacher of a distilled student), so no schedule of
        this net is the reference: even its full width is sampled and scored.
        """
        self._teacher = samples.float().cpu()
        self._teacher_features = None
        self.external = external

    def teacher(self, stats: SharingStats | None = None) -> torch.Tensor:
        """The teacher's samples (N, C, H, W), sampled on first use."""
        if self._teacher is None:
            x = generate_many(self.model, self.sampler, [self.teacher_widths], self.seeds,
                              batch_size=self.batch_size, stats=stats)
            self.set_teacher(x[0])
        return self._teacher

    def is_teacher(self, widths: Sequence) -> bool:
        """Whether ``widths`` is the teacher's own schedule (a resolution plan, of (width, side) pairs, never is;
        nor is a plan whose guidance choices differ from guidance at every step's own width, nor one with cached
        steps)."""
        uncond = getattr(widths, "uncond", None)
        if uncond is not None and tuple(uncond) != tuple(widths.widths):
            return False
        if getattr(widths, "cached", None) is not None:  # cached steps are never the teacher's full calls
            return False
        return not self.external and len(widths) == len(self.teacher_widths) and all(
            not isinstance(a, tuple) and width_index(a, (b,)) is not None for a, b in zip(widths, self.teacher_widths))

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.feature_net(x[a : a + 512]) for a in range(0, len(x), 512)]).double()

    @torch.no_grad()
    def score(self, samples: torch.Tensor) -> dict[str, float]:
        """Proxy terms of one candidate's samples (N, C, H, W): ``proxy``, ``proxy_pixel`` and, with a feature net, ``proxy_feature``."""
        teacher = self.teacher()
        if samples.shape != teacher.shape:
            raise DDSMError(f"candidate samples have shape {tuple(samples.shape)}; the teacher's are {tuple(teacher.shape)}")
        pixel = float((samples.double() - teacher.double()).pow(2).mean())
        out = {"proxy": pixel, "proxy_pixel": pixel}
        if self.feature_net is not None:
            if self._teacher_features is None:
                self._teacher_features = self._features(teacher)
            diff = self._features(samples.float()) - self._teacher_features
            feature = float(diff.pow(2).mean())
            out["proxy_feature"] = feature
            out["proxy"] = pixel + self.feature_weight * feature
        return out
