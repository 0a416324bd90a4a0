"""The cost model: what one denoiser call costs at each (width, side), and the one way to sum a schedule.

Search, export, plots and the quickstart price schedules with a
:class:`CostModel` and nothing else. It holds one cost per (width, side) in
one unit (``macs``: MACs per image; ``latency``: seconds per call), built
from fvcore counts, from a measured :class:`~ddsm.cost.table.CostTable`, or
from a plain mapping (``{width: cost}`` or ``{(width, side): cost}``). A
width-only model has the single side ``None``, meaning the image size.

A schedule's cost is the sum over its sampling steps of the cost of one call
at that step's width and side (:meth:`CostModel.total` for many at once,
:meth:`CostModel.plan_cost` for one :class:`~ddsm.plan.StepPlan`). Its JSON
form (:meth:`CostModel.to_json`, stored in a search folder's ``search.json``)
keys a width-only model by ``repr(width)`` and a resolution model by
``"width@side"``.

A model may also price a *cached* call per width (``cached``: the outer part of
the network only, at one cache level, :mod:`ddsm.samplers.reuse`); a plan's
cached steps then cost that instead of a full call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ddsm.config import width_index
from ddsm.cost.macs import count_cached_macs, count_macs
from ddsm.errors import DDSMError
from ddsm.io import stable_hash
from ddsm.plan import StepPlan

if TYPE_CHECKING:  # pragma: no cover
    from ddsm.checkpoint import Supernet

UNITS = ("macs", "latency")
#: a cost share within this of a budget is within it (shares are sums of floats)
SHARE_TOL = 1e-12


@dataclass(frozen=True)
class CostModel:
    """Cost of one denoiser call per (width, side); sums schedules."""

    widths: tuple[float, ...]  # ascending; the last is the full width
    sides: tuple[int | None, ...]  # ascending sides, or (None,) for a width-only model (the image size)
    calls: tuple[tuple[float, ...], ...]  # calls[i][j]: one call at widths[i] and sides[j]
    unit: str = "macs"  # 'macs' (per image) or 'latency' (seconds per call)
    batch: int | None = None  # latency only: the images per call its seconds were timed on (not in the fingerprint)
    passes: int = 1  # denoiser passes a step's cost holds (2: guided, conditional + unconditional at the step's width)
    cached: tuple[float, ...] | None = None  # one cached call per width at the image size (None: no caching priced)
    cache_level: int | None = None  # the backbone level ``cached`` was counted at

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise DDSMError(f"unknown cost unit {self.unit!r}; valid: {', '.join(UNITS)}")

    # -- building -----------------------------------------------------------------

    def per_step(self, passes: int) -> "CostModel":
        """The model of a sampling step that runs ``passes`` denoiser calls at its width and side (2: a guided step,
        conditional and unconditional); MACs scale with the images computed. Latency is refused: a guided pass
        doubles the images per call, whose time is measured, not a multiple."""
        if passes == 1:
            return self
        if self.unit != "macs":
            raise DDSMError("a guided search (sampler.guidance_scale) prices steps in MACs only; a measured latency "
                            "table times one pass per call: use objectives.cost flops")
        return replace(self, calls=tuple(tuple(c * passes for c in row) for row in self.calls), passes=passes,
                       cached=None if self.cached is None else tuple(c * passes for c in self.cached))

    def with_cached(self, cached: Mapping, level: int) -> "CostModel":
        """This model plus the cost of a cached call at cache ``level`` per width (``{width: c}``, one pass: scaled
        by this model's passes)."""
        one = CostModel.from_mapping(cached, self.widths, unit=self.unit)
        return replace(self, cached=tuple(row[0] * self.passes for row in one.calls), cache_level=int(level))

    @classmethod
    def from_mapping(cls, costs: Mapping, widths: Sequence[float], sides: Sequence[int] | None = None, *,
                     unit: str = "macs", batch: int | None = None, passes: int = 1) -> "CostModel":
        """The model of ``widths`` (x ``sides``) read from ``{width: c}`` or ``{(width, side): c}``; each must be there."""
        known: dict[tuple[float, int | None], float] = {}
        for k, v in costs.items():
            w, r = (float(k[0]), None if k[1] is None else int(k[1])) if isinstance(k, tuple) else (float(k), None)
            known[w, r] = float(v)
        keys = list(known)
        sides_ = tuple(sides) if sides is not None else (None,)
        rows = []
        for w in widths:
            row = []
            for r in sides_:
                hit = next((known[k] for k in keys if k[1] == r and width_index(k[0], (w,)) is not None), None)
                what = f"width {w:g}" + ("" if r is None else f" at resolution {r}")
                if hit is None:
                    raise DDSMError(f"cost_per_width has no cost for {what}; the search space needs widths "
                                    f"{list(widths)}" + ("" if r is None else f" at resolutions {list(sides_)}"))
                if not (math.isfinite(hit) and hit > 0):
                    raise DDSMError(f"cost of {what} is {hit!r}; costs must be positive and finite")
                row.append(hit)
            rows.append(tuple(row))
        return cls(widths=tuple(float(w) for w in widths), sides=sides_, calls=tuple(rows), unit=unit, batch=batch,
                   passes=passes)

    @classmethod
    def coerce(cls, costs: "CostModel | Mapping", widths: Sequence[float], sides: Sequence[int] | None = None
               ) -> "CostModel":
        """``costs`` restricted to ``widths`` x ``sides``: a CostModel as it is (checked), a mapping read."""
        if isinstance(costs, CostModel):
            out = cls.from_mapping({(w, r): costs.call(w, r) for w in widths for r in (sides or (None,))},
                                   widths, sides, unit=costs.unit, batch=costs.batch, passes=costs.passes)
            if costs.cached is None:
                return out
            return replace(out, cached=tuple(costs.cached[costs.index(w)[0]] for w in widths),
                           cache_level=costs.cache_level)
        return cls.from_mapping(costs, widths, sides)

    @classmethod
    def count(cls, net: "Supernet", widths: Sequence[float], sides: Sequence[int] | None = None) -> "CostModel":
        """fvcore MACs per image of one call at every width (and side) of ``net``."""
        return cls.from_mapping({(w if r is None else (w, r)): float(count_macs(net.model, w, r).total)
                                 for w in widths for r in (sides or (None,))}, widths, sides)

    def count_cached(self, net: "Supernet", level: int) -> "CostModel":
        """This model plus fvcore MACs per image of a cached call at ``level`` at every width."""
        return self.with_cached({w: float(count_cached_macs(net.model, w, level).total) for w in self.widths}, level)

    def cached_json(self) -> dict[str, float] | None:
        """``{"0.25": c, ...}``: one cached call per width (one pass), or None."""
        if self.cached is None:
            return None
        return {repr(w): c / self.passes for w, c in zip(self.widths, self.cached)}

    # -- files and identity -------------------------------------------------------

    def to_json(self) -> dict[str, float]:
        """``{"0.25": c, ...}`` (width-only) or ``{"0.25@8": c, ...}``, width-major."""
        if self.sides == (None,):
            return {repr(w): row[0] for w, row in zip(self.widths, self.calls)}
        return {f"{w!r}@{r}": c for w, row in zip(self.widths, self.calls) for r, c in zip(self.sides, row)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, unit: str = "macs", batch: int | None = None,
                  passes: int = 1) -> "CostModel":
        """Inverse of :meth:`to_json`."""
        costs: dict = {}
        for k, v in doc.items():
            w, _, r = str(k).partition("@")
            costs[(float(w), int(r)) if r else float(w)] = float(v)
        widths = sorted({k[0] if isinstance(k, tuple) else k for k in costs})
        sides = sorted({k[1] for k in costs if isinstance(k, tuple)}) or None
        return cls.from_mapping(costs, widths, sides, unit=unit, batch=batch, passes=passes)

    @property
    def flat(self) -> tuple[float, ...]:
        """Every call cost, width-major (every side of the narrowest width first)."""
        return tuple(c for row in self.calls for c in row)

    def fingerprint(self) -> str:
        """Identity of the costs (floats as exact hex strings), as a search folder records it."""
        flat = [float(c).hex() for c in self.flat]
        if self.cached is not None:  # a model without cached calls keeps its old fingerprint
            flat += ["cached", self.cache_level, *[float(c).hex() for c in self.cached]]
        return stable_hash(flat)

    # -- lookup and sums ----------------------------------------------------------

    def index(self, width: float, side: int | None = None) -> tuple[int, int]:
        """(width index, side index); side None is the image size (the largest side)."""
        i = width_index(width, self.widths)
        if i is None:
            raise DDSMError(f"no cost for width {width:g} (known widths: {list(self.widths)})")
        if side is None or self.sides == (None,):
            # a width-only model prices every step at the image size, whatever side it names
            return i, len(self.sides) - 1
        if side not in self.sides:
            raise DDSMError(f"no cost for width {width:g} at side {side} (known sides: {list(self.sides)})")
        return i, self.sides.index(side)

    def call(self, width: float, side: int | None = None) -> float:
        """Cost of one denoiser call at ``width`` and ``side``."""
        i, j = self.index(width, side)
        return self.calls[i][j]

    def total(self, W: np.ndarray, R: np.ndarray | None = None, U: np.ndarray | None = None,
              C: np.ndarray | None = None) -> np.ndarray:
        """Cost of each row of per-step width indices ``W`` (and side indices ``R``; None: the image size).

        ``U`` (a guided model only) chooses each step's unconditional pass: its width index, or -1 for no guidance
        at that step; the step then costs one pass at ``W`` plus one at ``U`` (None: both at ``W``). ``C`` marks
        cached steps (booleans), which cost a cached call at ``W`` (a model with ``cached`` costs only).
        """
        W = np.atleast_2d(np.asarray(W, dtype=np.int64))
        R = np.full_like(W, len(self.sides) - 1) if R is None else np.atleast_2d(np.asarray(R, dtype=np.int64))
        calls = np.asarray(self.calls, dtype=np.float64)
        if C is not None and np.any(C):
            if self.cached is None:
                raise DDSMError("this cost model prices no cached call; count one with CostModel.count_cached")
            if U is not None:
                raise DDSMError("cached steps and per-step guidance choices cannot be priced together")
            C = np.atleast_2d(np.asarray(C, dtype=bool))
            return np.where(C, np.asarray(self.cached, dtype=np.float64)[W], calls[W, R]).sum(axis=1)
        if U is None:
            return calls[W, R].sum(axis=1)
        if self.passes != 2:
            raise DDSMError("guidance choices per step (an unconditional pass width, or none) need a guided cost "
                            f"model (2 passes per step), not one of {self.passes} pass")
        U = np.atleast_2d(np.asarray(U, dtype=np.int64))
        one = calls / 2.0  # exact: a guided model's costs are single-pass costs times 2
        return one[W, R].sum(axis=1) + np.where(U >= 0, one[np.maximum(U, 0), R], 0.0).sum(axis=1)

    def plan_cost(self, plan: Any) -> float:
        """Cost of one schedule (a StepPlan, a Schedule or a per-step width list), its guidance choices included."""
        plan = StepPlan.of(plan)
        if plan.cached is not None and self.cached is not None and plan.cache_level != self.cache_level:
            raise DDSMError(f"the plan caches at level {plan.cache_level}, but this cost model prices cached calls at "
                            f"level {self.cache_level}; count it at the plan's level (CostModel.count_cached)")
        idx = [self.index(w, r) for w, r in plan.pairs()]
        U = None if plan.uncond is None else [-1 if u is None else self.index(u)[0] for u in plan.uncond]
        return float(self.total([i for i, _ in idx], [j for _, j in idx], U, plan.cached)[0])

    def full_cost(self, steps: int) -> float:
        """Cost of ``steps`` full-width calls at the image size: the baseline of every share."""
        return float(steps * self.calls[-1][-1])

    def share(self, plan: Any) -> float:
        """Cost of ``plan`` as a share of the full-width schedule of the same length."""
        plan = StepPlan.of(plan)
        return self.plan_cost(plan) / self.full_cost(plan.steps)
