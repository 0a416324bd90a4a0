"""The verdict: how each schedule compares with full width, with intervals, on seeds the search never saw.

A :class:`Verdict` samples every schedule, and the full-width schedule, on
the same *verdict seeds* (disjoint from the search's: :func:`check_disjoint`),
embeds the samples with the feature net, and reports every metric of
:data:`METRICS` with its percentile bootstrap interval and, for every
schedule, the paired interval of its difference from full width (the same
resampled seeds for both, :mod:`ddsm.metrics.intervals`). A difference
whose interval excludes 0 is significant at the interval's level.

References: the real images (all of the dataset) for FID, KID, pixel KID,
precision and recall; full-width samples on separate *teacher seeds* for the
teacher-relative FID (as many as asked, not capped by the dataset); the
full-width sample on the same verdict seed for the proxy.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.metrics.distribution import NEAREST_K, Candidate, Reference, embed, mean_of, pixel_reference, pixels
from ddsm.metrics.featurenet import FeatureNet
from ddsm.metrics.intervals import Draws, Interval, bootstrap_counts
from ddsm.plan import StepPlan
from ddsm.samplers.base import SamplerConfig
from ddsm.samplers.batched import generate_many
from ddsm.samplers.loop import make_sampler, seed_labels

#: verdict metrics: name -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "fid": ("FID against the real data", False),
    "teacher_fid": ("FID against full-width samples on other seeds", False),
    "kid": ("KID against the real data (unbiased)", False),
    "pixel_kid": ("KID on pixels against the real data (unbiased; sees fine detail)", False),
    "precision": ("precision (share of samples on the real manifold)", True),
    "recall": ("recall (share of real images on the samples' manifold)", True),
    "confidence": ("classifier confidence (mean top-class probability)", True),
    "class_accuracy": ("class accuracy (the feature net's classifier names the class asked for)", True),
    "proxy": ("proxy: mean squared distance to the full-width sample, same seed", False),
}
#: the teacher-relative FID's reference by default: full-width samples on these seeds, far from any search's
TEACHER_SEED, TEACHER_NUM = 1_000_000, 2000
#: metrics that cannot be negative: their intervals stop at 0
NONNEGATIVE = {"fid", "teacher_fid", "proxy"}
#: per-seed distances to the full-width sample: above 0 for any schedule that changes a sample at all, so they
#: measure how far a schedule moves from full width, not a loss of quality; "no significant loss" ignores them
DEVIATION = {"proxy"}
#: statistics of the whole sample set (not means of per-sample values): resampling seeds biases them
SET_STATISTICS = {"fid", "teacher_fid", "kid", "pixel_kid", "precision", "recall"}
#: fewer samples than this make FID, KID and the k-NN manifolds meaningless
MIN_SAMPLES = 50
FULL = "full width"


def check_disjoint(verdict: range, search: "range | Sequence[range] | None", *, what: str = "verdict seeds") -> None:
    """Refuse verdict seeds that overlap the seeds a search scored candidates on (selection bias)."""
    for search in [] if search is None else [search] if isinstance(search, range) else search:
        lo, hi = max(verdict.start, search.start), min(verdict.stop, search.stop)
        if lo >= hi:
            continue
        raise DDSMError(f"{what} {verdict.start}..{verdict.stop - 1} overlap the search's seeds "
                        f"{search.start}..{search.stop - 1} (at {lo}..{hi - 1}); a schedule would be judged on the "
                        f"samples it was selected on; choose seeds from {search.stop} on")


@dataclass(frozen=True)
class VerdictSettings:
    """How many samples and resamples a verdict uses, and on which seeds."""

    num: int = 1000  # samples per schedule, seeds seed..seed+num-1
    seed: int = 10_000  # first verdict seed (the search's default seeds are 0..num_samples-1)
    teacher_num: int = TEACHER_NUM  # full-width samples of the teacher-relative FID's reference
    teacher_seed: int = TEACHER_SEED  # first seed of that reference
    draws: int = 200  # bootstrap resamples
    level: float = 0.95  # interval coverage
    k: int = NEAREST_K  # nearest neighbours of the precision/recall manifolds
    bootstrap_seed: int = 0  # seeds the resampling

    def __post_init__(self) -> None:
        if self.num < MIN_SAMPLES or self.teacher_num < MIN_SAMPLES:
            raise DDSMError(f"a verdict needs at least {MIN_SAMPLES} samples per schedule and in the teacher "
                            f"reference, got num={self.num}, teacher_num={self.teacher_num}")
        if self.seed < 0 or self.teacher_seed < 0 or self.draws < 10 or not 0 < self.level < 1:
            raise DDSMError(f"verdict seeds must be >= 0, draws >= 10 and level in (0, 1); got seed={self.seed}, "
                            f"teacher_seed={self.teacher_seed}, draws={self.draws}, level={self.level}")
        check_disjoint(self.seeds, self.teacher_seeds, what="verdict seeds")

    @property
    def seeds(self) -> range:
        """The verdict seeds."""
        return range(self.seed, self.seed + self.num)

    @property
    def teacher_seeds(self) -> range:
        """The seeds of the teacher-relative FID's reference."""
        return range(self.teacher_seed, self.teacher_seed + self.teacher_num)


@dataclass
class VerdictResult:
    """Every schedule's metrics with intervals, and the resample draws for further paired comparisons."""

    settings: VerdictSettings
    draws: dict[str, dict[str, Draws]]  # schedule -> metric -> draws (full width included)
    metrics: tuple[str, ...]
    extra: dict[str, dict] = field(default_factory=dict)  # schedule -> extra columns (cost share, ...)
    search_seeds: tuple[range, ...] = ()  # the seeds the schedules were selected on (never the verdict's)
    samples: dict[str, torch.Tensor] | None = None  # schedule -> its samples, when score(keep_samples=True)

    @property
    def provenance(self) -> dict:
        """Which seeds the verdict used and which it kept clear of, as a file records it."""
        s = self.settings
        return {"verdict_seeds": f"{s.seed}..{s.seed + s.num - 1}",
                "teacher_seeds": f"{s.teacher_seed}..{s.teacher_seed + s.teacher_num - 1}",
                "search_seeds": "; ".join(f"{r.start}..{r.stop - 1}" for r in self.search_seeds) or "not given",
                "interval": f"{s.level:.0%} basic bootstrap over seeds, {s.draws} draws, paired"}

    def interval(self, schedule: str, metric: str) -> Interval:
        """The metric of one schedule with its interval."""
        d = self.draws[schedule][metric]
        # A set statistic's own interval from bias-centred resamples (Draws.centred); a mean needs none.
        iv = (d.centred() if metric in SET_STATISTICS else d).interval(self.settings.level)
        if metric in NONNEGATIVE and iv.low < 0:
            iv = Interval(value=iv.value, low=0.0, high=max(iv.high, 0.0), n=iv.n, level=iv.level)
        return iv

    def compare(self, a: str, b: str, metric: str) -> Interval:
        """The paired interval of ``metric(a) - metric(b)`` (same seeds, same resamples)."""
        return self.draws[a][metric].minus(self.draws[b][metric], self.settings.level)

    def table(self, against: Mapping[str, str] | None = None) -> pd.DataFrame:
        """One row per (schedule, metric): value, interval, and the paired difference from full width.

        ``against`` maps a schedule to a second one to compare it with (e.g.
        the cheapest uniform width costing at least as much); those columns
        are empty where it names none.
        """
        rows = []
        for name in self.draws:
            for m in self.metrics:
                iv = self.interval(name, m)
                d = self.compare(name, FULL, m)
                other = (against or {}).get(name)
                o = self.compare(name, other, m) if other else None
                rows.append({"schedule": name, **self.extra.get(name, {}), "metric": m, "value": iv.value,
                             "low": iv.low, "high": iv.high, "n": iv.n, "vs_full": d.value, "vs_full_low": d.low,
                             "vs_full_high": d.high, "differs_from_full": d.excludes(0.0) if name != FULL else False,
                             "other": other or "", "vs_other": o.value if o else math.nan,
                             "vs_other_low": o.low if o else math.nan, "vs_other_high": o.high if o else math.nan,
                             "differs_from_other": o.excludes(0.0) if o else False, **self.provenance})
        return pd.DataFrame(rows)


class Verdict:
    """Scores schedules on held-out seeds with every verdict metric; see the module docstring."""

    def __init__(self, net, sampler: SamplerConfig, featurenet: FeatureNet, real: torch.Tensor,
                 settings: VerdictSettings = VerdictSettings(), *,
                 search_seeds: range | Sequence[range] | None = None,
                 batch_size: int = 256, progress: bool = False) -> None:
        check_disjoint(settings.seeds, search_seeds)
        check_disjoint(settings.teacher_seeds, search_seeds, what="teacher seeds")
        self.search_seeds = () if search_seeds is None else \
            (search_seeds,) if isinstance(search_seeds, range) else tuple(search_seeds)
        self.net, self.sampler_config, self.settings = net, sampler, settings
        self.featurenet = copy.deepcopy(featurenet).double().eval()  # float64 features, the caller's net untouched
        self.sampler = make_sampler(NoiseSchedule(net.config.diffusion), sampler)
        self.batch_size, self.progress = batch_size, progress
        self.full = StepPlan((max(net.config.geometry.widths),) * sampler.calls)
        self.labels = featurenet.config.task == "labels"
        # class accuracy: a conditional model's samples (seed s asks for class s mod num_classes) judged by the
        # feature net's own classifier, which must know the model's classes
        self.conditional = bool(self.labels and getattr(net.model, "num_classes", 0))
        if self.conditional and featurenet.config.num_classes != net.model.num_classes:
            raise DDSMError(f"the feature net classifies {featurenet.config.num_classes} classes but the model has "
                            f"{net.model.num_classes}; class accuracy needs a feature net of the model's own data "
                            "(ddsm featurenet --checkpoint ...)")
        self.metrics = tuple(m for m in METRICS if (self.labels or m != "confidence")
                             and (self.conditional or m != "class_accuracy"))
        self.real = Reference(self._features(real)[0], k=settings.k, name="real data")
        self.real_pixels = pixel_reference(real)
        self.real_shape = tuple(real.shape[1:])
        self._teacher: Reference | None = None

    def _features(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return embed(self.featurenet, x)

    @property
    def _asked(self) -> np.ndarray:
        """The class each verdict seed's sample was asked for (the samplers' rule: seed mod num_classes)."""
        return np.asarray(seed_labels(self.net.model, list(self.settings.seeds)))

    def _classes(self, x: torch.Tensor) -> np.ndarray:
        """The feature net classifier's class for each image."""
        with torch.no_grad():
            return np.concatenate([self.featurenet.logits(x[a : a + 512].clamp(-1, 1).double()).argmax(1).numpy()
                                   for a in range(0, len(x), 512)])

    def _sample(self, plans: Sequence[StepPlan], seeds: range) -> torch.Tensor:
        return generate_many(self.net.model, self.sampler, [StepPlan.of(p) for p in plans], list(seeds),
                             batch_size=self.batch_size, fuse=False, progress=self.progress)

    @property
    def teacher(self) -> Reference:
        """Full-width samples on the teacher seeds, embedded (sampled once)."""
        if self._teacher is None:
            x = self._sample([self.full], self.settings.teacher_seeds)[0]
            self._teacher = Reference(self._features(x)[0], k=self.settings.k, name="teacher reference")
        return self._teacher

    def score(self, plans: Mapping[str, StepPlan], extra: Mapping[str, dict] | None = None, *,
              keep_samples: bool = False, samples: Mapping[str, torch.Tensor] | None = None) -> VerdictResult:
        """Every metric of every plan and of full width (``FULL``), on the verdict seeds.

        ``keep_samples`` keeps the samples in the result, for statistics of
        one's own on the same seeds and resamples (``bootstrap_counts`` with
        the settings' ``num``, ``draws`` and ``bootstrap_seed``). ``samples``
        adds candidates sampled elsewhere on the verdict seeds, one
        (num, C, H, W) tensor each: another model's (a distilled student's),
        judged paired against this net's full width like the plans.
        """
        samples = dict(samples or {})
        if FULL in plans or FULL in samples or set(plans) & set(samples):
            raise DDSMError(f"{FULL!r} is the verdict's own reference and names must be unique; give the schedules "
                            "other names")
        shape = (self.settings.num, *self.real_shape)
        wrong = [n for n, x in samples.items() if tuple(x.shape) != shape]
        if wrong:
            raise DDSMError(f"samples of {wrong} must have shape {shape} (one per verdict seed)")
        names = [FULL, *plans, *samples]
        drawn = self._sample([self.full, *plans.values()], self.settings.seeds)
        samples = torch.cat([drawn, torch.stack([x.float().cpu() for x in samples.values()])]) if samples else drawn
        bad = [n for n, x in zip(names, samples) if not torch.isfinite(x).all()]
        if bad:
            raise DDSMError(f"schedules {bad} give NaN/inf samples; they cannot be judged")
        s = self.settings
        counts = bootstrap_counts(s.num, s.draws, s.bootstrap_seed)
        teacher_x = samples[0].double()
        out: dict[str, dict[str, Draws]] = {}
        for name, x in zip(names, samples):
            feats, conf = self._features(x)
            real, teach = Candidate(feats, self.real), Candidate(feats, self.teacher)
            hits = {} if not self.conditional else \
                {"class_accuracy": mean_of((self._classes(x) == self._asked).astype(np.float64))}
            stats = {**hits, "fid": real.fid(), "teacher_fid": teach.fid(), "kid": real.kid(),
                     "pixel_kid": Candidate(pixels(x), self.real_pixels).kid(),
                     "precision": real.precision(), "recall": real.recall(), "confidence": mean_of(conf),
                     "proxy": mean_of((x.double() - teacher_x).pow(2).flatten(1).mean(1).numpy())}
            out[name] = {m: Draws.of(stats[m], s.num, counts) for m in self.metrics}
        return VerdictResult(settings=s, draws=out, metrics=self.metrics, extra=dict(extra or {}),
                             search_seeds=self.search_seeds,
                             samples=dict(zip(names, samples)) if keep_samples else None)


def worse_than(metric: str, low: float, high: float) -> bool:
    """Whether a difference's interval ``[low, high]`` says significantly worse, by ``metric``'s direction."""
    return high < 0 if METRICS[metric][1] else low > 0


def better_than(metric: str, low: float, high: float) -> bool:
    """Whether a difference's interval ``[low, high]`` says significantly better, by ``metric``'s direction."""
    return low > 0 if METRICS[metric][1] else high < 0


def judgement(rows: pd.DataFrame, against: str, prefix: str) -> str:
    """One plain sentence: in which metrics a schedule is significantly better or worse than ``against``."""
    better, worse = [], []
    for r in rows.to_dict(orient="records"):
        if not r[f"differs_from_{prefix}"]:
            continue
        d = r[f"vs_{prefix}"]
        good = d > 0 if METRICS[r["metric"]][1] else d < 0
        (better if good else worse).append(f"{r['metric']} {d:+.3g} [{r[f'vs_{prefix}_low']:+.3g}, "
                                           f"{r[f'vs_{prefix}_high']:+.3g}]")
    if not better and not worse:
        return f"no significant difference from {against} in any metric"
    parts = ([f"worse than {against} in " + ", ".join(worse)] if worse else []) + \
        ([f"better than {against} in " + ", ".join(better)] if better else [])
    return "; ".join(parts)


def _significantly_worse(rows: pd.DataFrame, prefix: str) -> bool:
    """Whether any metric of one schedule's rows is significantly worse than the ``prefix`` comparison."""
    return any(r[f"differs_from_{prefix}"] and (r[f"vs_{prefix}"] < 0 if METRICS[r["metric"]][1] else r[f"vs_{prefix}"] > 0)
               for r in rows.to_dict(orient="records") if r["metric"] not in DEVIATION)


def no_loss_summary(table: pd.DataFrame, *, uniform_prefix: str = "uniform") -> str:
    """One sentence: the cheapest schedule with no metric significantly worse than full width, and whether it beats
    the cheapest uniform width with none (costs less).

    The per-seed deviation metrics (:data:`DEVIATION`: the proxy) are left out: they are above 0 for every
    schedule that changes any sample, so counting them would leave full width as the only schedule without a loss.

    ``table`` is :meth:`VerdictResult.table` with a ``share`` column; uniform widths are the schedules whose name
    starts with ``uniform_prefix``.
    """
    if "share" not in table:
        raise DDSMError("no_loss_summary needs the verdict table's 'share' column (VerdictResult.table with extra)")
    if table.empty or table["metric"].isin(DEVIATION).all():
        return ("No quality metric was judged (only the per-seed proxy, or none), so no schedule can be called free "
                "of a loss against full width.")
    n = int(table["n"].iloc[0])
    safe = []
    for name, rows in table[table["schedule"] != FULL].groupby("schedule", sort=False):
        if not _significantly_worse(rows, "full"):
            safe.append((float(rows["share"].iloc[0]), str(name)))
    safe.sort()
    uniform = [(s, k) for s, k in safe if k.startswith(uniform_prefix)]
    if not safe:
        return (f"No schedule judged here is free of a significant loss against full width in every quality metric "
                f"judged (n = {n} held-out seeds; the per-seed proxy left out); full width is the cheapest safe choice.")
    share, name = safe[0]
    head = (f"Cheapest schedule with no significant loss against full width in any quality metric judged "
            f"(n = {n} held-out seeds; the per-seed proxy left out): "
            f"{name} at {share:.1%} of the FLOPs")
    if not uniform:
        return head + "; no uniform width is free of a significant loss."
    ushare, uname = uniform[0]
    if name == uname:
        return head + ", a uniform width: no searched schedule beats it."
    if share < ushare - 1e-12:
        return head + f"; it beats the cheapest such uniform width, {uname} at {ushare:.1%}, by {ushare - share:.1%} of the FLOPs."
    return head + f"; it does not beat the cheapest such uniform width, {uname} at {ushare:.1%}."


#: the terminal width the verdict table keeps to; the CSV holds every column
TEXT_COLUMNS = 100


def format_verdict(table: pd.DataFrame, *, columns: int = TEXT_COLUMNS) -> str:
    """The verdict table as text no wider than ``columns``: per schedule, a name line, its metrics packed into
    lines of ``metric value [low, high]``, then one plain sentence per comparison, wrapped."""
    import textwrap

    metrics = list(dict.fromkeys(table["metric"]))
    lines = []
    for name, rows in table.groupby("schedule", sort=False):
        rows = rows.set_index("metric").loc[metrics].reset_index()
        share = rows["share"].iloc[0] if "share" in rows else math.nan
        share_text = f"  ({share:.1%} of the FLOPs)" if math.isfinite(share) else ""
        lines.append(textwrap.shorten(f"{name}{share_text}", columns, placeholder="..."))
        cells = [f"{r['metric']} {r['value']:.4g} [{r['low']:.3g}, {r['high']:.3g}]" for r in rows.to_dict(orient="records")]
        line = "   "
        for c in cells:  # as many cells per line as fit
            if len(line) > 3 and len(line) + 3 + len(c) > columns:
                lines.append(line.rstrip())
                line = "   "
            line += ("   " if len(line) > 3 else "") + c
        lines.append(line.rstrip())
        if name == FULL:
            continue
        sentences = [judgement(rows, "full width", "full")]
        other = rows["other"].iloc[0]
        if other:
            sentences.append(judgement(rows, other, "other"))
        for text in sentences:
            lines += textwrap.wrap(text, columns, initial_indent="   - ", subsequent_indent="     ")
    return "\n".join(lines)
