"""The Pareto front of a search and its hypervolume.

The front is taken over *every* evaluation in the log (seeding probes
included), not only over NSGA-II's current population: survival may crowd
out a non-dominated schedule that was still worth reporting. A member is
valid, within budget, and no other such schedule is at least as good in
quality and cost and better in one. Exact ties keep the first evaluated.

Hypervolume (pymoo's ``HV``) is measured in (quality, cost share) against a
reference point fixed once per run and stored in its checkpoint:
``(worst valid quality seen up to generation 0, padded by 10 %, 1.1)``. A
fixed point makes the numbers of successive generations, and of a run and
its resume, comparable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ddsm.metrics.intervals import Draws


def pareto_front(rows: list[dict], *, quality: str) -> list[dict]:
    """Non-dominated rows (minimising quality and share), cheapest first; ``rows`` must be feasible."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["share"], rows[i][quality], i))
    front, best = [], math.inf
    for i in order:
        if rows[i][quality] < best:
            front.append(rows[i])
            best = rows[i][quality]
    return front


def reference_point(qualities: list[float]) -> tuple[float, float]:
    """The fixed HV reference: worst finite quality padded by 10 % of its size, and cost share 1.1."""
    finite = [q for q in qualities if math.isfinite(q)]
    worst = max(finite) if finite else 1.0
    return worst + 0.1 * max(abs(worst), 1e-12), 1.1


def hypervolume(front: list[dict], *, quality: str, ref: tuple[float, float]) -> float:
    """Hypervolume of ``front`` against ``ref`` (points beyond the reference count for nothing)."""
    from pymoo.indicators.hv import HV

    F = np.array([[r[quality], r["share"]] for r in front if r[quality] < ref[0] and r["share"] < ref[1]], dtype=float)
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(ref, dtype=float))(F))


def front_frame(front: list[dict], *, quality: str) -> pd.DataFrame:
    """The front as a table: one member per row, cheapest first."""
    cols = ["genome", "widths", quality, "cost", "share", "generation"]
    if any(isinstance(r.get("resolutions"), str) and r["resolutions"] for r in front):
        cols.insert(2, "resolutions")
    if any(isinstance(r.get("uncond_widths"), str) and r["uncond_widths"] for r in front):
        cols.insert(2, "uncond_widths")
    if any(isinstance(r.get("cached"), str) and r["cached"] for r in front):
        cols.insert(2, "cached")
    return pd.DataFrame([{c: r[c] for c in cols} for r in front], columns=cols)


def hypervolume_draws(members: list[tuple[Any, float]], *, ref: tuple[float, float]) -> Any:
    """Hypervolume of judged members ``(quality Draws, cost share)`` (lower quality is better), on every resample.

    Returns a ``Draws`` whose paired ``minus`` compares two fronts judged on the same seeds and resamples.
    Resampling seeds with replacement duplicates samples, which biases a set statistic: on digits at 500
    samples a resample's FID sits several units above the full-sample FID, enough to push every member past a
    reference point taken from the full-sample values, so every resample's hypervolume would be 0 and its
    interval degenerate. Each member's resamples are therefore first centred (``Draws.centred``); the front
    and its hypervolume are then taken per resample.
    """

    if not members:
        raise ValueError("hypervolume_draws needs at least one member")
    shares = [s for _, s in members]
    centred = [d.centred().draws for d, _ in members]

    def hv_of(qualities) -> float:
        pts = [{"q": float(q), "share": s} for q, s in zip(qualities, shares)]
        return hypervolume(pareto_front(pts, quality="q"), quality="q", ref=ref)

    n_draws = len(centred[0])
    per_draw = np.array([hv_of([c[i] for c in centred]) for i in range(n_draws)])
    return Draws(value=hv_of([d.value for d, _ in members]), draws=per_draw, n=members[0][0].n)
