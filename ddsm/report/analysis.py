"""What a search folder says beyond its front: the uniform and two-segment families, full width, sensitivity.

Nothing here samples except :func:`evaluate_missing`, which scores the family
members the log lacks with the search's own evaluator (same metric, samples
and seeds), keeping them out of the search folder.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ddsm.metrics.registry import get_metric, metric_names
from ddsm.search.config import SearchConfig
from ddsm.search.folder import SearchRun
from ddsm.search.log import genome_key, parse_genome
from ddsm.search.problem import WidthProblem
from ddsm.search.seeding import (interval_seeds, reuse_interval_seeds, sensitivity_probes, two_segment_seeds,
                                 uniform_seeds)
from ddsm.search.setup import evaluator_factory

#: the T-Stitch family's name in figures (its point labels read "narrow width × narrow steps")
TWO_SEGMENT = "two-segment: narrow width×steps first, then full width"
#: guidance only after the first steps (guidance genes only; labels read "width, unguided steps")
INTERVAL = "interval guidance: width, first steps unguided"
CACHE_INTERVAL = "DeepCache interval: width, a full step every N genes"


@dataclass
class Family:
    """A structured family of schedules (uniform width, two-segment) and those of it the log evaluated."""

    name: str
    genomes: list[tuple[int, ...]]  # every member of the family in this space
    rows: pd.DataFrame  # log rows of the members that were evaluated and scored (valid, finite quality)
    labels: list[str]  # one short label per row of ``rows``
    evaluated_now: int = 0  # rows scored for the report (:func:`evaluate_missing`) rather than taken from the log


def scored_rows(run: SearchRun, *, extra: bool = False) -> pd.DataFrame:
    """Valid rows with a finite quality: of the log, and with ``extra`` also those scored for the report."""
    cols = ["genome", run.quality, "share", "valid"]
    parts = [f for f in (run.log, run.extra if extra else None) if f is not None and not f.empty]
    if not parts:
        return pd.DataFrame(columns=cols)
    rows = pd.concat([f[cols] for f in parts], ignore_index=True).drop_duplicates("genome")
    return rows[rows["valid"].astype(bool) & np.isfinite(rows[run.quality].astype(float))]


def family_genomes(space: SearchConfig) -> list[tuple[int, ...]]:
    """Every uniform-width, interval-guidance (guidance genes only), DeepCache-interval (reuse genes only) and
    two-segment genome of ``space`` (the full-width one included), once each.

    In a resolution space they run at the image size throughout (transition genes 0).
    """
    return [g + (0,) * space.n_resolution_genes
            for g in dict.fromkeys([*uniform_seeds(space), *interval_seeds(space), *reuse_interval_seeds(space),
                                    *two_segment_seeds(space)])]


def evaluate_missing(run: SearchRun, checkpoint: str, *, featurenet: str | None = None,
                     device: str = "auto") -> SearchRun:
    """``run`` with the family members its log lacks scored by the search's own evaluator (in ``extra``).

    Same metric, samples and seeds as the search (the space's evaluator
    settings), so the numbers sit on the same axis as the logged ones. The
    search folder is not touched: the rows live in ``run.extra`` only.
    """

    factory = evaluator_factory(run.space, checkpoint, featurenet)  # FID without a feature net fails here, early
    factory = getattr(factory, "judge", factory)  # a screened search: its quality is the judge's, on the judge's seeds
    # a logged genome is never scored again, even an invalid one: the search's answer for it stands
    logged = set(run.log["genome"]) if run.log is not None else set()
    todo = [g for g in family_genomes(run.space) if genome_key(g) not in logged]
    if not todo:
        return run
    df = factory(device=device).evaluate([run.space.decode(g) for g in todo])
    shares = WidthProblem(run.space, run.costs).share(np.asarray(todo, dtype=np.int64))
    extra = pd.DataFrame({"genome": [genome_key(g) for g in todo], run.quality: df[run.quality].astype(float),
                          "valid": df["valid"].astype(bool), "share": shares})
    return dataclasses.replace(run, extra=extra)


def families(run: SearchRun) -> list[Family]:
    """The uniform-width, interval-guidance (guidance genes only) and two-segment (T-Stitch) families, as far as
    the evaluation log has them.

    Nothing is evaluated here: a member the search never asked about (say a
    uniform width over budget) is absent unless :func:`evaluate_missing`
    scored it into ``run.extra``; the plot says how many of the family are
    shown and where they came from.
    """
    space = run.space
    scored = scored_rows(run, extra=True).set_index("genome", drop=False)
    extra = set(run.extra["genome"]) if run.extra is not None else set()
    out = []
    full = space.full_index
    pad = (0,) * space.n_resolution_genes  # families run at the image size
    uni = [g + pad for g in uniform_seeds(space)]
    two = [g + pad for g in two_segment_seeds(space)]
    n = space.n_genes

    def unguided_steps(g) -> int:
        return sum(space.segment_lengths[: sum(1 for x in g[n : n + space.n_guidance_genes] if x == 0)])

    kinds = [("uniform width", uni, lambda g: f"w={space.widths[g[0]]:g}")]
    if space.guidance_genes:
        kinds.append((INTERVAL, [g + pad for g in interval_seeds(space)],
                      lambda g: f"{space.widths[g[0]]:g}, {unguided_steps(g)}"))
    if space.reuse is not None:
        def every(g) -> int:  # the interval: the first gene after gene 0 that is a full step again
            reuse = g[space.n_choice_genes - space.n_reuse_genes: space.n_choice_genes]
            return next(i for i in range(1, len(reuse)) if reuse[i] == 0)

        kinds.append((CACHE_INTERVAL, [g + pad for g in reuse_interval_seeds(space)],
                      lambda g: f"{space.widths[g[0]]:g}, N={every(g)}"))
    kinds.append((TWO_SEGMENT, two,
                  lambda g: f"{space.widths[g[0]]:g}×{sum(space.segment_lengths[:sum(1 for x in g[:n] if x != full)])}"))
    for name, genomes, label in kinds:
        keys = [genome_key(g) for g in genomes]
        present = [k for k in keys if k in scored.index]
        rows = scored.loc[present].reset_index(drop=True) if present else scored.iloc[0:0]
        out.append(Family(name=name, genomes=genomes, rows=rows, labels=[label(parse_genome(k)) for k in present],
                          evaluated_now=sum(k in extra for k in present)))
    return out


def full_width_quality(run: SearchRun) -> tuple[float | None, str]:
    """Quality of the full-width schedule: from the log, else 0 for the teacher-relative proxies, else unknown."""
    key = genome_key(run.space.guided((run.space.full_index,) * run.space.n_genes) + (0,) * run.space.n_resolution_genes)
    scored = scored_rows(run, extra=True)
    hit = scored[scored["genome"] == key]
    if not hit.empty:
        return float(hit[run.quality].iloc[0]), "evaluated"
    if run.quality in metric_names() and get_metric(run.quality).teacher_relative:
        return 0.0, "0 by definition"
    return None, "not evaluated"


def sensitivity(run: SearchRun) -> pd.DataFrame | None:
    """Per-gene degradation from the seeding probes (generation -1), or None if the log has none.

    One row per (gene, narrower width): ``degradation = q(gene alone at
    width, rest full) - q(full width)``; ``first_step``/``last_step`` are the
    1-based sampling steps the gene covers (noisiest first). ``pass`` says
    which pass the probe narrowed: ``cond``, or with guidance genes ``uncond``
    (its ``width`` NaN where the probe drops guidance at those steps).
    """
    if run.log is None or run.log.empty:
        return None
    space = run.space
    probes = [p + (0,) * space.n_resolution_genes for p in sensitivity_probes(space)]
    seeds = run.log[run.log["generation"] == -1].set_index("genome")
    keys = [genome_key(p) for p in probes]
    if keys[0] not in seeds.index or not any(k in seeds.index for k in keys[1:]):
        return None
    base = float(seeds.loc[keys[0], run.quality])
    starts = np.concatenate([[0], np.cumsum(space.segment_lengths)])
    rows = []
    top = space.full_choices
    for p, k in zip(probes[1:], keys[1:]):
        i = next(i for i, x in enumerate(p[: space.n_choice_genes]) if x != top[i])
        g, uncond = i % space.n_genes, i >= space.n_genes
        width = (math.nan if p[i] == 0 else space.widths[p[i] - 1]) if uncond else space.widths[p[i]]
        v = float(seeds.loc[k, run.quality]) if k in seeds.index else math.nan
        rows.append({"gene": g, "first_step": int(starts[g]) + 1, "last_step": int(starts[g + 1]),
                     "pass": "uncond" if uncond else "cond", "width": width,
                     "degradation": v - base if math.isfinite(v) else math.nan})
    return pd.DataFrame(rows)


