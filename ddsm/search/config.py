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

With ``resolutions`` (ascending sides, the last the image size), the genome
gains one *transition gene* per larger side, appended after the width (and guidance) genes:
gene j is the first sampling step whose state has at least side
``resolutions[j]`` (0..steps-1, so the last step always runs at the image
size). Step i then runs at ``resolutions[#{j: gene_j <= i}]``: resolution never
decreases, whatever the genes. Transition genes are kept sorted, so every
resolution schedule has exactly one genome.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field, field_validator, model_serializer, model_validator

from ddsm.config import DEFAULT_WIDTHS, WidthSet, _Frozen, load_yaml, validate, width_index
from ddsm.errors import DDSMError
from ddsm.io import stable_hash
from ddsm.limits import MAX_SEED, clip
from ddsm.metrics.registry import get_metric, metric_names, objective_names
from ddsm.plan import StepPlan
from ddsm.samplers.base import SamplerConfig
from ddsm.samplers.progressive import check_resolution_set
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


class SearchConfig(_Frozen):
    """A per-step width search: space, budget, objectives and the NSGA-II recipe."""

    widths: WidthSet = DEFAULT_WIDTHS  # allowed widths; must include 1.0 (the full net), each once
    resolutions: tuple[int, ...] | None = None  # sides a step may run at, ascending, last = image size (None: width only)
    sampler: SamplerConfig = SamplerConfig(kind="ddim", steps=20)  # the sampler setting schedules are for
    segments: int | None = Field(None, gt=0)  # genes = contiguous near-equal step groups (None: one gene per step)
    guidance_genes: bool = False  # guided sampler: also choose each gene's unconditional pass width, or no guidance
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

    @model_serializer(mode="wrap")
    def _drop_unset_guidance_genes(self, handler):
        # Off, it is not written: every space.json written before guidance genes keeps its bytes.
        data = handler(self)
        if isinstance(data, dict) and not data.get("guidance_genes"):
            data.pop("guidance_genes", None)
        return data

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
            if len(t) != self.n_resolution_genes or any(not 0 <= x < self.sampler.steps for x in t):
                raise ValueError(f"seeding.transitions entry {list(t)} must hold {self.n_resolution_genes} steps "
                                 f"in 0..{self.sampler.steps - 1} (one per side above the smallest)")
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
        if self.segments is not None and self.segments > self.sampler.steps:
            raise ValueError(f"segments {self.segments} exceeds the {self.sampler.steps} sampling steps; "
                             f"use 1..{self.sampler.steps} or leave it unset for one gene per step")
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
        choices = len(self.widths) * (len(self.widths) + 1 if self.guidance_genes else 1)
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
        if not data.get("guidance_genes"):  # likewise
            data.pop("guidance_genes", None)
        for (part, k), v in ADDED_DEFAULTS.items():  # settings added later: at their old behaviour, the old fingerprint
            if data[part].get(k) == v:
                data[part].pop(k)
        return stable_hash(data)

    # -- gene layout ----------------------------------------------------------------

    @property
    def n_genes(self) -> int:
        """Number of genes (segments, or sampling steps)."""
        return self.segments if self.segments is not None else self.sampler.steps

    @cached_property
    def segment_lengths(self) -> tuple[int, ...]:
        """Sampling steps covered by each gene, noisiest first."""
        q, r = divmod(self.sampler.steps, self.n_genes)
        return tuple(q + 1 if g < r else q for g in range(self.n_genes))

    @property
    def n_resolution_genes(self) -> int:
        """Transition genes (one per side above the smallest; 0 without resolutions)."""
        return 0 if self.resolutions is None else len(self.resolutions) - 1

    @property
    def n_guidance_genes(self) -> int:
        """Guidance genes (one per width gene with ``guidance_genes``, else 0)."""
        return self.n_genes if self.guidance_genes else 0

    @property
    def n_choice_genes(self) -> int:
        """Width and guidance genes: every gene but the transition genes, which start here."""
        return self.n_genes + self.n_guidance_genes

    @property
    def n_vars(self) -> int:
        """Length of a genome: width genes, guidance genes, then transition genes."""
        return self.n_choice_genes + self.n_resolution_genes

    @property
    def upper_bounds(self) -> tuple[int, ...]:
        """Largest value of every gene."""
        return ((self.full_index,) * self.n_genes + (self.full_index + 1,) * self.n_guidance_genes
                + (self.sampler.steps - 1,) * self.n_resolution_genes)

    def guided(self, width_genes: Sequence[int], guidance: Sequence[int] | None = None) -> tuple[int, ...]:
        """Width genes with their guidance genes: ``guidance`` as given, or (None) each gene's unconditional pass at
        its own width, as a plain guided sampler runs; the width genes alone without ``guidance_genes``."""
        w = tuple(int(x) for x in width_genes)
        if not self.guidance_genes:
            return w
        return w + (tuple(x + 1 for x in w) if guidance is None else tuple(int(x) for x in guidance))

    @property
    def full_index(self) -> int:
        """Gene value of the full width (the last index)."""
        return len(self.widths) - 1

    def check_genome(self, genome: Sequence[int]) -> tuple[int, ...]:
        """``genome`` as a tuple of ints, or a DDSMError naming the bad gene and the valid range."""
        g = tuple(int(x) for x in genome)
        if len(g) != self.n_vars:
            raise DDSMError(f"genome has {len(g)} genes; this search space has {self.n_vars}")
        bad = [x for x in g[: self.n_genes] if not 0 <= x <= self.full_index]
        if bad:
            raise DDSMError(f"genome values {bad} are not width indices; valid: 0..{self.full_index} "
                            f"(widths {list(self.widths)})")
        bad = [x for x in g[self.n_genes:self.n_choice_genes] if not 0 <= x <= self.full_index + 1]
        if bad:
            raise DDSMError(f"guidance genes {bad} are not valid; valid: 0 (no guidance) or 1..{self.full_index + 1} "
                            f"(the unconditional pass at widths {list(self.widths)})")
        bad = [x for x in g[self.n_choice_genes:] if not 0 <= x < self.sampler.steps]
        if bad:
            raise DDSMError(f"transition genes {bad} are not sampling steps; valid: 0..{self.sampler.steps - 1}")
        return g

    def canonical(self, genome: Sequence[int]) -> tuple[int, ...]:
        """The genome with its transition genes sorted (the same schedule, its one genome)."""
        g = tuple(int(x) for x in genome)
        return g[: self.n_choice_genes] + tuple(sorted(g[self.n_choice_genes:]))

    def genes_to_widths(self, genome: Sequence[int]) -> list[float]:
        """One width per sampling step (noisiest first) for ``genome``."""
        g = self.check_genome(genome)
        out: list[float] = []
        for value, n in zip(g, self.segment_lengths):
            out.extend([self.widths[value]] * n)
        return out

    def genes_to_resolutions(self, genome: Sequence[int]) -> list[int] | None:
        """One side per sampling step for ``genome`` (None for a width-only space)."""
        g = self.check_genome(genome)
        if self.resolutions is None:
            return None
        t = g[self.n_choice_genes:]
        return [self.resolutions[sum(1 for x in t if x <= i)] for i in range(self.sampler.steps)]

    def genes_to_uncond(self, genome: Sequence[int]) -> list[float | None] | None:
        """The unconditional pass's width per sampling step (None where no guidance), or None without guidance genes."""
        g = self.check_genome(genome)
        if not self.guidance_genes:
            return None
        out: list[float | None] = []
        for value, n in zip(g[self.n_genes:self.n_choice_genes], self.segment_lengths):
            out.extend([None if value == 0 else self.widths[value - 1]] * n)
        return out

    def decode(self, genome: Sequence[int]) -> StepPlan:
        """The schedule a genome stands for: width (and, with resolutions, side; with guidance genes, the
        unconditional pass) per sampling step."""
        sides = self.genes_to_resolutions(genome)
        uncond = self.genes_to_uncond(genome)
        return StepPlan(tuple(self.genes_to_widths(genome)), None if sides is None else tuple(sides),
                        None if uncond is None else tuple(uncond))

    def uncond_to_genes(self, uncond: Sequence[float | None]) -> tuple[int, ...]:
        """The guidance genes of a per-step unconditional width list (None: no guidance); each gene's steps must
        agree."""
        uncond = list(uncond)
        if len(uncond) != self.sampler.steps:
            raise DDSMError(f"uncond list has {len(uncond)} entries; the sampler takes {self.sampler.steps} steps")
        check_widths([u for u in uncond if u is not None], self.widths, where="uncond list")
        genes, start = [], 0
        for n in self.segment_lengths:
            seg = {None if u is None else _index(u, self.widths) for u in uncond[start:start + n]}
            if len(seg) != 1:
                shown = sorted("none" if j is None else f"{self.widths[j]:g}" for j in seg)
                raise DDSMError(f"steps {start}..{start + n - 1} form one gene but have unconditional widths {shown}; "
                                "give each gene's steps one value")
            j = seg.pop()
            genes.append(0 if j is None else j + 1)
            start += n
        return tuple(genes)

    def resolutions_to_genes(self, sides: Sequence[int]) -> tuple[int, ...]:
        """The transition genes of a per-step side list (non-decreasing, values in ``resolutions``)."""
        if self.resolutions is None:
            return ()
        sides = list(sides)
        if len(sides) != self.sampler.steps or any(s not in self.resolutions for s in sides):
            raise DDSMError(f"resolution list {sides} must hold {self.sampler.steps} sides from {list(self.resolutions)}")
        if any(b < a for a, b in zip(sides, sides[1:])):
            raise DDSMError(f"resolution list {sides} decreases; a resolution may only grow")
        return tuple(next((i for i, s in enumerate(sides) if s >= r), self.sampler.steps - 1)
                     for r in self.resolutions[1:])

    def widths_to_genes(self, widths: Sequence[float]) -> tuple[int, ...]:
        """The genome of a per-step width list; every gene's steps must share one width."""
        widths = list(widths)
        if len(widths) != self.sampler.steps:
            raise DDSMError(f"width list has {len(widths)} entries; the sampler takes {self.sampler.steps} steps")
        check_widths(widths, self.widths, where="width list")
        genome, start = [], 0
        for n in self.segment_lengths:
            seg = set(widths[start:start + n])
            if len(seg) != 1:
                raise DDSMError(f"steps {start}..{start + n - 1} form one gene but have widths {sorted(seg)}")
            genome.append(_index(widths[start], self.widths))
            start += n
        return tuple(genome)

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


def _index(w: float, valid: Sequence[float]) -> int:
    i = width_index(w, valid)
    if i is None:
        raise DDSMError(f"width {w} is not one of {list(valid)}")
    return i


def check_widths(widths: Sequence[float], valid: Sequence[float], *, where: str = "widths") -> list[float]:
    """Every width in ``valid`` (returned as its canonical value), or a DDSMError naming the unknown ones."""
    bad = sorted({float(w) for w in widths if width_index(w, valid) is None})
    if bad:
        raise DDSMError(f"{where}: width{'s' if len(bad) > 1 else ''} {', '.join(f'{b:g}' for b in bad)} "
                        f"not served by the supernet; valid: {[float(v) for v in valid]}")
    return [float(valid[_index(w, valid)]) for w in widths]
