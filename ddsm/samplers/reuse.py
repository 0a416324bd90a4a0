"""Cached steps in the sampling loop: a denoiser call that reuses the deep features of the last full step.

DeepCache (Ma et al., 2024) observed that the deep features of a UNet change
little between neighbouring sampling steps, so a step can run only the outer
blocks and read the deep map of the last full step; FORA and Δ-DiT do the same
with the residual of a transformer's middle blocks. Here the backbone says where
it can cut (:meth:`~ddsm.nn.backbone.Backbone.forward_reuse`), a
:class:`~ddsm.plan.StepPlan` says which steps are cached, and the loops carry
the features from step to step beside the state.

The features of one seed batch are a pair ``(conditional, unconditional)`` of
row-aligned tensors (the second None when the call makes one pass), so the
batched sampler can slice, concatenate and split them by rows like the states.
A full step in a plan with cached steps runs ``forward_reuse(deep=None)``,
whose ε is the plain forward's, so its samples up to the first cached step are
those of the same widths without caching.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ddsm.errors import DDSMError
from ddsm.nn.backbone import Backbone, check_reuse_level
from ddsm.plan import StepPlan

#: the deep features of one seed batch: (conditional pass, unconditional pass or None)
Deep = tuple


def check_cached(model: Backbone, plan: StepPlan, *, sides: Sequence[int] | None = None) -> tuple[bool, ...] | None:
    """Per-step cached flags of ``plan`` (None when no step is cached), or a one-line DDSMError when the model or
    the plan cannot run them: a level the backbone does not offer, per-step guidance choices, resolution changes."""
    if plan.cached is None:
        return None
    check_reuse_level(model, plan.cache_level)
    if plan.uncond is not None:
        raise DDSMError("a schedule cannot both cache steps and choose the unconditional pass per step (uncond "
                        "widths) yet: the cached features of a skipped pass would be stale; use one of the two")
    if sides is not None and len(set(sides)) > 1:
        raise DDSMError("a schedule cannot both cache steps and change resolution: a cached map has the side of "
                        "the step that filled it; use one of the two")
    return plan.cached


def reuse_eps(model: Backbone, x: torch.Tensor, t: Any, cond: torch.Tensor | None, scale: float | None,
              level: int, deep: Deep | None) -> tuple[torch.Tensor, Deep]:
    """(ε, the features to carry) at ``x``: a full call that fills the features (``deep`` None) or a cached call
    that reads them, unguided or classifier-free guided (both passes in one batched call, as
    :func:`~ddsm.samplers.loop.guided_eps`)."""
    # a cached call carries the features on as they were filled (not as fitted to its width: a later, wider cached
    # step still gets every channel)
    if cond is None or scale is None or scale == 1.0:
        eps, d = model.forward_reuse(x, t, level=level, deep=None if deep is None else deep[0],
                                     **({} if cond is None else {"cond": cond}))
        return eps, (d, None) if deep is None else deep
    null = torch.full_like(cond, model.num_classes)
    if torch.is_tensor(t) and t.ndim == 1:
        t = torch.cat([t, t])
    both = None if deep is None else torch.cat([deep[0], deep[1]])
    eps, d = model.forward_reuse(torch.cat([x, x]), t, level=level, deep=both, cond=torch.cat([cond, null]))
    eps_c, eps_u = eps.chunk(2)
    return eps_u + scale * (eps_c - eps_u), tuple(d.chunk(2)) if deep is None else deep


def deep_rows(deep: Deep, a: int, b: int) -> Deep:
    """Rows ``a:b`` of every part of ``deep``."""
    return tuple(None if d is None else d[a:b] for d in deep)


def deep_cat(parts: Sequence[Deep]) -> Deep:
    """Concatenate the features of several row blocks, part by part."""
    if len(parts) == 1:
        return parts[0]
    return tuple(None if part[0] is None else torch.cat(list(part)) for part in zip(*parts))


def deep_clone(deep: Deep) -> Deep:
    """A copy of every part (a row slice would keep the whole batch it came from alive)."""
    return tuple(None if d is None else d.clone() for d in deep)


def deep_bytes(deep: Deep | None) -> int:
    """Memory the features hold."""
    return 0 if deep is None else sum(d.numel() * d.element_size() for d in deep if d is not None)
