"""The search space: which widths, which sampler, how steps group into genes, and the search recipe.

A search space is a YAML file (see ``search_spaces/``) validated into one
frozen :class:`SearchConfig`. It fixes everything that decides the result of a
search: the allowed widths, the sampler setting the schedule is for, the gene
layout, the FLOP (or latency) budget, the objectives, the NSGA-II recipe, how
the first population is seeded and how many samples the evaluator draws.

Genome encoding: one integer per gene, the *index* into the sorted ``widths``
(0 is the narrowest, ``len(widths) - 1`` the full width). Indices are ordinal,
so crossover between neighbouring widths means something. A gene covers one
contiguous run of sampling steps: by default one step, or, with ``segments``,
the steps split into that many near-equal runs (the first ``steps % segments``
runs one step longer), noisiest step first as in the schedule file.

With ``guidance_genes`` (a guided sampler only), each width gene has a
*guidance gene* for the same steps, appended after the width genes: 0 means
no guidance at those steps (the conditional pass alone), ``j + 1`` the
unconditional pass at ``widths[j]``. The cost then counts each pass at its
own width.

With ``reuse`` (a backbone cache level), each width gene also has a *reuse
gene* for the same steps, after the guidance genes: 1 means those steps are
cached (the outer part of the network at the gene's width, the deep features
of the last full step reused, :mod:`ddsm.samplers.reuse`), 0 full steps. The
first sampling step is always full, whatever its gene.

With ``resolutions`` (ascending sides, the last the image size), the genome
gains one *transition gene* per larger side, appended after the width (and guidance) genes:
gene j is the first sampling step whose state has at least side
``resolutions[j]`` (0..steps-1, so the last step always runs at the image
size). Step i then runs at ``resolutions[#{j: gene_j <= i}]``: resolution never
decreases, whatever the genes. Transition genes are kept sorted, so every
resolution schedule has exactly one genome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field, field_validator, model_validator

from ddsm.config import DEFAULT_WIDTHS, WidthSet, _Frozen, load_yaml, validate
from ddsm.errors import DDSMError
from ddsm.io import stable_hash
from ddsm.limits import MAX_SEED, clip
from ddsm.metrics.registry import get_metric, metric_names, objective_names
from ddsm.samplers.base import SamplerConfig
from ddsm.samplers.progressive import check_resolution_set
from ddsm.search.genes import GeneLayout, check_widths
from ddsm.search.shipped import is_joint_doc, space_path

#: fields that do not change what a search computes: a resume may change them
RESUMABLE_CHANGES = {"generations", "cache"}
#: settings added after searches were run: left out of the fingerprint at these values (the old behaviour)
ADDED_DEFAULTS = {("seeding", "knapsack"): "budgets", ("objectives", "batch"): None, ("sampler", "timesteps"): None}
#: samples per candidate: every candidate is sampled this many times (100 000 is hours per candidate on a CPU)
MAX_SEARCH_SAMPLES = 100_000
#: NSGA-II population and generations: far beyond any search that finishes
MAX_POPULATION = 100_000
MAX_GENERATIONS = 100_000


class Objectives(_Frozen):
    """What the search minimises: a quality metric (lower is better) and a cost."""

    quality: str = "proxy"  # a registered metric (ddsm.metrics.registry): the evaluator column to minimise
    cost: Literal["flops", "latency"] = "flops"  # which CostTable column prices a denoiser call
    batch: int | None = Field(None, gt=0)  # latency only: images per call priced (a cost table batch; None: its default)

    @field_validator("quality")
    @classmethod
    def _registered(cls, v: str) -> str:
        try:
            metric = get_metric(v)
        except DDSMError as e:
            raise ValueError(str(e)) from None
        if not metric.objective:
            raise ValueError(f"metric {v!r} is higher-is-better, a verdict metric; a search minimises one of: "
                             f"{', '.join(objective_names())}")
        return v

    @model_validator(mode="after")
    def _batch_for_latency(self) -> "Objectives":
        if self.batch is not None and self.cost != "latency":
            raise ValueError(f"objectives.batch {self.batch} applies to cost 'latency' only; MACs per image do not "
                             "depend on the batch (drop batch or set cost: latency)")
        return self


class MutationConfig(_Frozen):
    """Integer mutation; ``prob`` is the chance per offspring, ``prob_var`` the chance per gene of a mutated one."""

    operator: Literal["reset", "pm"] = "reset"  # reset: a mutated gene always takes another width; pm: polynomial + rounding
    prob: float = Field(1.0, ge=0.0, le=1.0)  # chance that an offspring is mutated at all
    prob_var: float | None = Field(None, ge=0.0, le=1.0)  # chance per gene of a mutated offspring (None: 1/genes)
    eta: float = Field(3.0, gt=0.0)  # polynomial-mutation distribution index (pm only)


class CrossoverConfig(_Frozen):
    """Simulated binary crossover on the width indices, rounded back to integers."""

    prob: float = Field(0.9, ge=0.0, le=1.0)  # chance that a mating recombines (else parents are copied)
    eta: float = Field(3.0, gt=0.0)  # SBX distribution index: small values spread children wider


class SeedingConfig(_Frozen):
    """How the first population is built (see :mod:`ddsm.search.seeding`)."""

    uniform: bool = True  # every width at every step (those within budget)
    two_segment: tuple[float, ...] = (0.25, 0.5, 0.75)  # T-Stitch: narrow for this fraction of steps, then full width
    n_random: int = Field(4, ge=0)  # random schedules narrowed to a random cost within budget
    sensitivity: bool = True  # per-gene sensitivity + exact knapsack seeds (costs 1 + genes*(widths-1) evaluations)
    spectrum_rule: bool = True  # with resolutions: seed transitions predicted by the data's power spectrum
    transitions: tuple[tuple[int, ...], ...] = ()  # with resolutions: more transition-gene seeds, one tuple each
    knapsack_budgets: int = Field(4, ge=1)  # budgets swept between the cheapest schedule and the budget
    # budgets: knapsack optima at knapsack_budgets budgets; front: members spread along the additive model's
    # whole Pareto front within budget, as many as the population has room for (and the front operators)
    knapsack: Literal["budgets", "front"] = "budgets"

    @field_validator("two_segment")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [f for f in v if not 0.0 < f < 1.0]
        if bad:
            raise ValueError(f"two_segment fractions must lie strictly between 0 and 1, got {bad}")
        return tuple(sorted(set(v)))


class ReuseGenes(_Frozen):
    """Cached steps as a search choice (DeepCache): where the backbone cuts a cached call."""

    level: int = Field(..., ge=0)  # a level the backbone offers (Backbone.reuse_levels); larger runs more per call


class EvaluatorSettings(_Frozen):
    """What the evaluator is asked to do for every candidate (common random numbers: same seeds for all)."""

    num_samples: int = Field(256, ge=2, le=MAX_SEARCH_SAMPLES)  # samples drawn per candidate
    seed: int = Field(0, ge=0, le=MAX_SEED)  # sample i uses seed seed+i for every candidate
    batch_size: int = Field(256, gt=0)  # images denoised together (speed only)
    fuse: bool = False  # one denoiser call per width and step (GPU speed) vs per state (bit-identical on any worker)
    trajectory_cache_mb: float = Field(256.0, ge=0.0)  # per worker: states of computed prefixes, reused (0: off)


class ScreenConfig(_Frozen):
    """Two-stage evaluation (see :mod:`ddsm.search.staged`): a cheap metric screens offspring, the best are judged."""

    metric: str = "proxy"  # a registered search metric, cheaper than objectives.quality
    num_samples: int = Field(64, ge=2, le=MAX_SEARCH_SAMPLES)  # samples per screened candidate (seeds seed..)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # first seed of the screen's samples
    bins: int = Field(4, ge=1)  # equal-width cost-share bins between the cheapest schedule and the budget
    promote: int = Field(2, ge=1)  # best-screened genomes per bin judged by objectives.quality

    @field_validator("metric")
    @classmethod
    def _registered(cls, v: str) -> str:
        return Objectives._registered(v)


class CacheConfig(_Frozen):
    """The evaluation log that doubles as a cache (an evaluated genome is never computed again)."""

    format: Literal["auto", "parquet", "csv"] = "auto"  # auto: Parquet when pyarrow is installed, else CSV
    flush_seconds: float = Field(10.0, ge=0.0)  # within a generation, write the log at most this often (0: every chunk)


class SearchConfig(GeneLayout, _Frozen):
    """A per-step width search: space, budget, objectives and the NSGA-II recipe."""

    widths: WidthSet = DEFAULT_WIDTHS  # allowed widths; must include 1.0 (the full net), each once
    resolutions: tuple[int, ...] | None = None  # sides a step may run at, ascending, last = image size (None: width only)
    sampler: SamplerConfig = SamplerConfig(kind="ddim", steps=20)  # the sampler setting schedules are for
    segments: int | None = Field(None, gt=0)  # genes = contiguous near-equal step groups (None: one gene per step)
    guidance_genes: bool = False  # guided sampler: also choose each gene's unconditional pass width, or no guidance
    reuse: ReuseGenes | None = None  # also choose per gene: full step, or cached (reuse deep features) at its width
    budget: float = Field(0.5, gt=0.0, le=1.0)  # cost <= budget * cost of the full-width schedule
    objectives: Objectives = Objectives()
    population: int = Field(24, ge=2, le=MAX_POPULATION)  # NSGA-II population (and offspring per generation)
    generations: int = Field(10, ge=1, le=MAX_GENERATIONS)  # generation 0 is the first population; runs 0..generations-1
    seed: int = Field(0, ge=0, le=MAX_SEED)  # seeds NSGA-II's generator and the seeding draws
    mutation: MutationConfig = MutationConfig()
    crossover: CrossoverConfig = CrossoverConfig()
    seeding: SeedingConfig = SeedingConfig()
    evaluator: EvaluatorSettings = EvaluatorSettings()
    screen: ScreenConfig | None = None  # two-stage evaluation of offspring (None: every candidate judged in full)
    cache: CacheConfig = CacheConfig()

    OMIT_WHEN = {"guidance_genes": False, "reuse": None}  # every space.json written before these genes

    @field_validator("resolutions")
    @classmethod
    def _resolutions(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        if len(v) < 2 or any(r <= 0 for r in v) or list(v) != sorted(set(v)):
            raise ValueError(f"resolutions must be at least 2 strictly ascending positive sides, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _layout(self) -> "SearchConfig":
        if self.resolutions is not None and not self.quality_metric.resolutions:
            able = [n for n in metric_names() if get_metric(n).resolutions]
            raise ValueError(f"objectives.quality {self.objectives.quality} scores width schedules only; "
                             f"with resolutions use {' or '.join(able)}")
        for t in self.seeding.transitions:
            if len(t) != self.n_resolution_genes or any(not 0 <= x < self.sampler.calls for x in t):
                raise ValueError(f"seeding.transitions entry {list(t)} must hold {self.n_resolution_genes} steps "
                                 f"in 0..{self.sampler.calls - 1} (one per side above the smallest)")
        if self.guidance_genes:
            if self.sampler.guidance_scale in (None, 1.0):
                raise ValueError(f"guidance_genes need a guided sampler; sampler.guidance_scale is "
                                 f"{self.sampler.guidance_scale!r} (set it to a scale other than 1)")
            if self.resolutions is not None:
                raise ValueError("guidance_genes and resolutions cannot be searched together yet; drop one of them")
            if self.objectives.cost != "flops":
                raise ValueError("guidance_genes price passes in MACs; use objectives.cost flops")
            linear = [f"{k} proxy_linear" for k, m in (("objectives.quality", self.objectives.quality),
                                                       ("screen.metric", self.screen and self.screen.metric))
                      if m == "proxy_linear"]
            if linear:
                raise ValueError(f"{linear[0]} scores widths only, not guidance choices; with guidance_genes use "
                                 "proxy, pixel_kid or fid")
        if self.reuse is not None:
            clash = [what for what, on in (("resolutions", self.resolutions is not None),
                                           ("guidance_genes", self.guidance_genes),
                                           ("proxy_linear", "proxy_linear" in (self.objectives.quality,
                                                                              self.screen and self.screen.metric)))
                     if on]
            if clash:
                raise ValueError(f"reuse genes cannot be searched with {clash[0]} yet; drop one of them")
        if self.segments is not None and self.segments > self.sampler.calls:
            raise ValueError(f"segments {self.segments} exceeds the sampler's {self.sampler.calls} model calls; "
                             f"use 1..{self.sampler.calls} or leave it unset for one gene per call")
        last = self.evaluator.seed + self.evaluator.num_samples - 1
        if last > MAX_SEED:
            raise ValueError(f"evaluator seeds {self.evaluator.seed}..{last} pass the largest seed 2**63-1; "
                             f"use evaluator.seed <= {MAX_SEED - self.evaluator.num_samples + 1}")
        q = self.quality_metric
        try:
            q.check_num(self.evaluator.num_samples, what="evaluator.num_samples")
            if self.screen is not None:
                if self.screen.metric == q.name:
                    raise DDSMError(f"screen.metric {q.name!r} is the search's own quality; screen with a cheaper "
                                    f"metric (e.g. proxy) or drop screen")
                get_metric(self.screen.metric).check_num(self.screen.num_samples, what="screen.num_samples")
        except DDSMError as e:
            raise ValueError(str(e)) from None
        if self.screen is not None:
            sc = self.screen
            if sc.bins * sc.promote > self.population:
                raise ValueError(f"screen promotes up to {sc.bins} bins x {sc.promote} = {sc.bins * sc.promote} "
                                 f"genomes per generation, more than the {self.population} offspring that exist; "
                                 f"use bins x promote <= population")
            if self.resolutions is not None and not get_metric(sc.metric).resolutions:
                raise ValueError(f"screen.metric {sc.metric} scores width schedules only; with resolutions use "
                                 f"another screen")
            last = sc.seed + sc.num_samples - 1
            if last > MAX_SEED:
                raise ValueError(f"screen seeds {sc.seed}..{last} pass the largest seed 2**63-1; "
                                 f"use screen.seed <= {MAX_SEED - sc.num_samples + 1}")
        choices = len(self.widths) * (len(self.widths) + 1 if self.guidance_genes else 1) * (2 if self.reuse else 1)
        distinct = choices ** self.n_genes
        if distinct < self.population:
            raise ValueError(f"population {self.population} exceeds the {distinct} distinct schedules of "
                             f"{choices} choices over {self.n_genes} genes; use a population <= {distinct}")
        return self

    @property
    def search_seeds(self) -> tuple[range, ...]:
        """Every seed range the search scores candidates on (the evaluator's, and the screen's): never a verdict's."""
        ev = self.evaluator
        own = range(ev.seed, ev.seed + ev.num_samples)
        if self.screen is None:
            return (own,)
        return (own, range(self.screen.seed, self.screen.seed + self.screen.num_samples))

    @property
    def quality_metric(self):
        """The registered :class:`~ddsm.metrics.registry.Metric` the search minimises."""
        return get_metric(self.objectives.quality)

    # -- loading --------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> "SearchConfig":
        """Read and validate a search-space YAML file, or a shipped one by name; one-line DDSMError on any problem."""
        path = space_path(path)
        doc = load_yaml(path)
        if is_joint_doc(doc):
            raise DDSMError(f"{clip(str(path), 120)} is a steps x widths space (it lists students); search it with "
                            "`ddsm search-steps --space`")
        return validate(cls, doc, source=f"search space {clip(str(path), 120)}")

    # -- identity -------------------------------------------------------------------

    def fingerprint(self) -> str:
        """Hash of every setting that changes what the search computes (not ``generations`` or ``cache``).

        ``generations`` only says where to stop, so a finished search can be
        resumed with more generations; the cache settings change speed only.
        """
        data = self.model_dump(mode="json")
        for k in RESUMABLE_CHANGES:
            data.pop(k)
        if data.get("screen") is None:  # added later: a space without one keeps its old fingerprint
            data.pop("screen", None)
        for key in ("guidance_genes", "reuse"):  # likewise
            if not data.get(key):
                data.pop(key, None)
        for (part, k), v in ADDED_DEFAULTS.items():  # settings added later: at their old behaviour, the old fingerprint
            if data[part].get(k) == v:
                data[part].pop(k)
        return stable_hash(data)

    def check_supernet(self, supernet_widths: Sequence[float], unet=None) -> None:
        """Raise a DDSMError if a search width (or, given the ``unet`` config, a resolution) does not fit the supernet."""
        check_widths(self.widths, supernet_widths, where="search space widths")
        if unet is not None and self.sampler.guidance_scale is not None and not unet.num_classes:
            raise DDSMError(f"search space sampler has guidance_scale {self.sampler.guidance_scale:g}, but the "
                            "supernet is unconditional (num_classes 0); remove it")
        if unet is not None and self.resolutions is not None:
            check_resolution_set(self.resolutions, unet, where="search space resolutions")
            bad = [(a, b) for i, a in enumerate(self.resolutions) for b in self.resolutions[i + 1:] if b % a]
            if bad:
                raise DDSMError(f"search space resolutions {list(self.resolutions)}: {bad[0][0]} -> {bad[0][1]} is not "
                                "a whole ratio; every side must divide every larger one")
            if self.resolutions[-1] != unet.image_size:
                raise DDSMError(f"search space resolutions {list(self.resolutions)} must end at the image size "
                                f"{unet.image_size}")
