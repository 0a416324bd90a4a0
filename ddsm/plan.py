"""The in-memory schedule: a width and a state side for every visited sampling step.

A :class:`StepPlan` is what a search genome decodes to, what a schedule file
holds once loaded (:meth:`ddsm.schedule.Schedule.plan`), and what
:func:`ddsm.samplers.generate`, the evaluators, export and the diffusers
bridge take. Steps are in the order the sampler visits them (the noisiest
first). ``resolutions`` None means every step runs at the image size.

Under classifier-free guidance each step makes two passes, conditional and
unconditional. ``uncond`` names the width of the unconditional pass at every
step, or None at a step that takes no guidance (the conditional prediction
alone: guidance limited to an interval of noise levels, Kynkäänniemi et al.,
2024); ``uncond`` None means both passes at the step's width, every step, as
a plain guided sampler does.

Feature reuse (DeepCache and its transformer kin): ``cached`` marks the steps
whose call runs only the outer part of the network at the step's width and
reuses the deep features of the most recent full step (the backbone's
``cache_level`` says where the cut is). The first step is always full.

A plan iterates over its widths, so code written for plain per-step width
lists (an evaluator of width schedules, say) keeps working; the sides are in
``resolutions``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Iterator

from ddsm.errors import DDSMError


@dataclass(frozen=True)
class StepPlan(Sequence):
    """Width (and optionally side) per sampling step, noisiest step first."""

    widths: tuple[float, ...]  # supernet width at every step
    resolutions: tuple[int, ...] | None = None  # side of the state at every step (None: the image size throughout)
    uncond: tuple[float | None, ...] | None = None  # guided: unconditional pass width per step, None: no guidance there
    cached: tuple[bool, ...] | None = None  # per step: reuse the last full step's deep features (None: no step does)
    cache_level: int | None = None  # where the backbone cuts a cached call (Backbone.reuse_levels); with ``cached``

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(float(w) for w in self.widths))
        if self.resolutions is not None:
            object.__setattr__(self, "resolutions", tuple(int(r) for r in self.resolutions))
        if self.uncond is not None:
            object.__setattr__(self, "uncond", tuple(None if u is None else float(u) for u in self.uncond))
            if len(self.uncond) != len(self.widths):
                raise DDSMError(f"uncond has {len(self.uncond)} entries for {len(self.widths)} steps; give one per step "
                                "(a width, or None for no guidance there), or leave uncond None")
        if self.cached is not None:
            object.__setattr__(self, "cached", tuple(bool(c) for c in self.cached))
            if len(self.cached) != len(self.widths):
                raise DDSMError(f"cached has {len(self.cached)} entries for {len(self.widths)} steps; give one per step")
            if self.cached and self.cached[0]:
                raise DDSMError("step 0 is cached, but a cached step reuses the features of an earlier full step and "
                                "step 0 has none; make the first step full")
            if not any(self.cached):
                object.__setattr__(self, "cached", None)  # no cached step: the plain plan it is
        if self.cache_level is not None and not isinstance(self.cache_level, bool):
            try:
                object.__setattr__(self, "cache_level", operator.index(self.cache_level))  # numpy ints from tables
            except TypeError:
                raise DDSMError(f"cache_level {self.cache_level!r} is not an integer level") from None
        if self.cached is not None and self.cache_level is None:
            raise DDSMError("a plan with cached steps needs a cache_level (where the backbone cuts a cached call)")
        if self.cached is None:
            object.__setattr__(self, "cache_level", None)

    @classmethod
    def of(cls, obj: Any) -> "StepPlan":
        """A plan from a StepPlan, a Schedule, a per-step width list or a list of (width, side) pairs."""
        if isinstance(obj, StepPlan):
            return obj
        if hasattr(obj, "plan") and callable(obj.plan):  # a Schedule
            return obj.plan()
        items = list(obj)
        if items and isinstance(items[0], (tuple, list)):
            return cls(tuple(p[0] for p in items), tuple(p[1] for p in items))
        return cls(tuple(items))

    @property
    def steps(self) -> int:
        """Number of sampling steps."""
        return len(self.widths)

    def sides(self, image_size: int) -> tuple[int, ...]:
        """The side of every step, the image size where ``resolutions`` is None."""
        return self.resolutions if self.resolutions is not None else (int(image_size),) * len(self.widths)

    def pairs(self, image_size: int | None = None) -> tuple[tuple[float, int | None], ...]:
        """(width, side) per step; side None for a width-only plan unless ``image_size`` is given."""
        if self.resolutions is None and image_size is None:
            return tuple((w, None) for w in self.widths)
        return tuple(zip(self.widths, self.sides(image_size)))

    def uncond_widths(self) -> tuple[float | None, ...]:
        """The unconditional pass's width at every step (None: no guidance there); the step's own width by default."""
        return self.uncond if self.uncond is not None else self.widths

    @property
    def cached_steps(self) -> int:
        """Steps that reuse the deep features of an earlier full step."""
        return sum(self.cached or ())

    def is_cached(self, i: int) -> bool:
        """Whether step ``i`` reuses features."""
        return bool(self.cached and self.cached[i])

    @property
    def guided_steps(self) -> int:
        """Steps that make an unconditional pass (when the sampler guides)."""
        return sum(u is not None for u in self.uncond_widths())

    def __len__(self) -> int:
        return len(self.widths)

    def __getitem__(self, i):  # type: ignore[override]
        return self.widths[i]

    def __iter__(self) -> Iterator[float]:
        return iter(self.widths)
