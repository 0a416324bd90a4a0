"""Sampling many width schedules at once, sharing every computation they have in common.

A search scores hundreds of candidate schedules on the same per-sample seeds
(common random numbers: differences between candidates then come from the
widths alone, not from the noise). Three observations make this much cheaper
than calling :func:`~ddsm.samplers.loop.generate` once per candidate:

- Candidates whose widths agree on steps 0..i are in exactly the same state
  after step i (same start noise, same per-step noise, same denoiser calls), so
  that state is computed once per distinct *prefix*, not once per candidate.
  The candidates form a prefix tree; sampling walks it one level per step.
- The same holds *across* calls: a :class:`TrajectoryCache` keeps the state
  after every computed prefix (bounded by bytes, least recently used out), so
  a later candidate starts from the deepest prefix any earlier one computed.
- With ``fuse=True``, all distinct states that run the same width at a step go
  through the denoiser in one call, concatenated along the batch, so the
  number of calls per step is at most the number of widths. With
  ``fuse=False`` every state runs alone on its seed batch: a candidate's
  samples are then bit-identical whatever other candidates share the call,
  whatever the cache held, so a search gives the same numbers serial or on
  Ray, interrupted or not. On a CPU the two run at about the same speed
  (the ``bench_metrics`` experiment measures it); fusing pays on a GPU.

Plans with cached steps (:mod:`ddsm.samplers.reuse`) carry the deep features of
their last full step beside the state: a prefix's state is the pair, the
trajectory cache stores both (keyed apart by the cache level), and a fused
call joins only features of one shape (filled at one width). Every plan in
one call caches at one level; its full steps fill features for every plan
(the plain call's output, so plans without cached steps are unchanged).

Stochastic samplers (DDPM, DDIM with eta > 0) draw each sample's step noise
once per step from that sample's generator and give the same noise to every
candidate, exactly as ``generate`` would draw it for each one alone; the noise
of a step is drawn even when every candidate starts past it from the cache,
so no later draw moves. The result for every candidate therefore equals
``generate`` with its schedule (bit for bit with ``fuse=False`` and the same
seed batches; up to float rounding of batched convolutions otherwise).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
from tqdm.auto import tqdm

from ddsm.errors import DDSMError
from ddsm.nn.backbone import Backbone, to_images
from ddsm.samplers.base import Sampler
from ddsm.samplers.loop import (SAME_WIDTH, check_full_sides, check_guidance, check_uncond, eval_mode, guided_eps,
                                per_sample_randn, per_step_widths, sample_generators, step_noise, visited_timesteps)
from ddsm.plan import StepPlan
from ddsm.samplers.progressive import check_resolutions, enter_growth, family_transform, to_side
from ddsm.samplers.reuse import check_cached, deep_bytes, deep_cat, deep_clone, deep_rows, reuse_eps


@dataclass
class SharingStats:
    """How much denoiser work ``generate_many`` ran, against sampling each candidate alone.

    Pass one instance to several calls to accumulate their totals.
    """

    image_evals: int = 0  # denoiser evaluations of one image that actually ran
    shared_image_evals: int = 0  # what prefix sharing within each call alone would run (no cache)
    naive_image_evals: int = 0  # K * N * steps: what one generate() per candidate would run
    denoiser_calls: int = 0  # forward calls of the supernet
    naive_denoiser_calls: int = 0  # K * steps * seed batches

    @property
    def saved_fraction(self) -> float:
        """Share of the naive image evaluations that sharing and the cache avoided (0 when nothing ran)."""
        return 1.0 - self.image_evals / self.naive_image_evals if self.naive_image_evals else 0.0

    @property
    def cache_saved_fraction(self) -> float:
        """Share of the evaluations left after in-call sharing that the trajectory cache avoided."""
        return 1.0 - self.image_evals / self.shared_image_evals if self.shared_image_evals else 0.0


class TrajectoryCache:
    """States after sampling steps, keyed by (seed batch, width prefix); least recently used out past ``max_bytes``.

    One cache serves one model and one sampler setting (an evaluator owns
    one); the key carries the seeds, so different seed sets never mix.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise DDSMError(f"trajectory cache size {max_bytes} bytes must be >= 0 (0 turns it off)")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.lookups = 0
        self._states: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The state stored under ``key`` (marked as recently used), or None."""
        x = self._states.get(key)
        if x is not None:
            self._states.move_to_end(key)
        return x

    def put(self, key: Hashable, x: "torch.Tensor | tuple") -> None:
        """Store ``x`` (a state, or a (state, deep features) pair), dropping the least recently used states to stay
        within ``max_bytes``."""
        size = _bytes(x)
        if size > self.max_bytes or key in self._states:
            return
        self._states[key] = x
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._states.popitem(last=False)
            self.bytes -= _bytes(old)

    def deepest(self, seeds: tuple[int, ...], plan: Sequence[float], tag: Hashable = None
                ) -> tuple[int, torch.Tensor | None]:
        """The longest prefix of ``plan`` with a stored state: (its length, the state), or (0, None). ``tag``
        keeps apart states stored with something more (the deep features of a cache level)."""
        self.lookups += 1
        for n in range(len(plan), 0, -1):
            x = self.get((seeds, tuple(plan[:n])) if tag is None else (seeds, tuple(plan[:n]), tag))
            if x is not None:
                self.hits += 1
                return n, x
        return 0, None


def _bytes(value) -> int:
    if isinstance(value, tuple):
        return _bytes(value[0]) + deep_bytes(value[1])
    return value.numel() * value.element_size()


def count_distinct_prefixes(plans: Sequence[Sequence[float]]) -> list[int]:
    """Per step, how many distinct states the candidates are in (the denoiser evaluations per sample)."""
    steps = len(plans[0]) if plans else 0
    return [len({tuple(p[: i + 1]) for p in plans}) for i in range(steps)]


Step = tuple  # (width, side, unconditional pass, cached) of one sampling step; see step_plan


def step_plan(schedule, num_steps: int, model: Backbone, scale: float | None = None) -> tuple[Step, ...]:
    """One (width, side, unconditional width, cached) per step from a width list, a :class:`StepPlan` or a list of
    (width, side) pairs; the unconditional width is :data:`~ddsm.samplers.loop.SAME_WIDTH` unless the plan chooses
    it per step (None: no guidance at that step), checked against ``scale``; cached says whether the step reuses
    the last full step's features (:mod:`ddsm.samplers.reuse`)."""
    plan = StepPlan.of(schedule)
    ws = per_step_widths(list(plan.widths), num_steps, model)
    sides = check_resolutions(plan.resolutions, model, num_steps)
    cached = check_cached(model, plan, sides=sides) or (False,) * num_steps
    return tuple(zip(ws, sides, check_uncond(model, plan, scale), cached))


def _cache_levels(schedules: Sequence) -> list[int]:
    # the cache levels of the plans that cache, ascending (empty: none does)
    return sorted({p.cache_level for p in map(StepPlan.of, schedules) if p.cached is not None})


@torch.no_grad()
def generate_many(
    model: Backbone,
    sampler: Sampler,
    schedules: Sequence,
    seeds: Sequence[int],
    *,
    batch_size: int = 256,
    max_call_images: int | None = None,
    fuse: bool = True,
    cache: TrajectoryCache | None = None,
    stats: SharingStats | None = None,
    transform: str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """Sample every schedule on the same seeds; returns float32 CPU (K, N, C, H, W) images (a latent model's decoded).

    ``schedules[k]`` is candidate k's per-step widths, or a
    :class:`~ddsm.plan.StepPlan` / list of (width, side)
    pairs for a resolution schedule. Seeds are processed ``batch_size`` at a
    time. ``fuse``: one denoiser call per step, width and side holding every
    distinct state that runs it (up to ``max_call_images`` images per call
    when given, to bound memory on a GPU); otherwise one call per state.
    ``cache`` (keep one per model and sampler) reuses states computed by
    earlier calls and stores the new ones. ``stats``, when given, is
    incremented with the work done.
    """
    steps = visited_timesteps(sampler)
    if len(schedules) == 0:
        raise DDSMError("generate_many needs at least one schedule; got none")
    if batch_size <= 0 or (max_call_images is not None and max_call_images <= 0):
        raise DDSMError(f"batch_size ({batch_size}) and max_call_images ({max_call_images}) must be positive")
    # a conditional model samples seed i with class i mod num_classes, guided as the sampler config says
    labels, scale = check_guidance(model, None, sampler.config.guidance_scale, seeds)
    levels = _cache_levels(schedules)
    if len(levels) > 1:  # one level per pass (full steps fill features at one level): split, sample, reassemble
        group = [levels.index(p.cache_level) if p.cached is not None else 0 for p in map(StepPlan.of, schedules)]
        out = None
        for j in range(len(levels)):
            ks = [k for k, g in enumerate(group) if g == j]
            part = generate_many(model, sampler, [schedules[k] for k in ks], seeds, batch_size=batch_size,
                                 max_call_images=max_call_images, fuse=fuse, cache=cache, stats=stats,
                                 transform=transform, progress=progress)
            out = torch.empty((len(schedules), *part.shape[1:]), dtype=part.dtype) if out is None else out
            out[ks] = part
        return out
    plans = [step_plan(s, len(steps), model, scale) for s in schedules]
    for p in plans:
        check_full_sides(sampler.config.kind, [r for _, r, _, _ in p], model.image_size)
    level = levels[0] if levels else None  # None: no plan caches, every call is the plain one
    tag = None if level is None else ("reuse", level)
    transform = family_transform(model, transform)
    device = next(model.parameters()).device
    c, side = model.in_channels, model.image_size
    shape = (c, side, side)
    K, N, S = len(plans), len(seeds), len(steps)
    per_step = count_distinct_prefixes(plans)
    out = torch.empty((K, N, *shape), dtype=torch.float32)
    bar = tqdm(total=sum(per_step) * N, desc=f"sampling {K} schedules", unit="img", disable=not progress)
    with eval_mode(model), bar:
        for start in range(0, N, batch_size):
            batch = tuple(int(s) for s in seeds[start : start + batch_size])
            gens = sample_generators(batch)
            n = len(gens)
            cond = None if labels is None else labels[start : start + n].to(device)
            # Where each distinct plan starts: after its deepest cached prefix (0: from the initial noise).
            resume: dict[int, list[tuple[int, torch.Tensor]]] = {}
            for k, p in enumerate(plans):
                depth, x = cache.deepest(batch, p, tag) if cache is not None else (0, None)
                resume.setdefault(depth, []).append((k, x))
            # groups: prefix so far -> (candidates on it, their common state, its deep features or None); all live.
            x0 = per_sample_randn(gens, shape, device)
            # a multistep sampler's state carries its history after the image (ddsm.samplers.dpm)
            groups: dict[tuple, tuple] = {(): ([k for k, _ in resume.get(0, [])], sampler.initial_state(x0), None)}
            if not groups[()][0]:
                groups.clear()
            for i, t in enumerate(steps):
                for k, x in resume.get(i, []) if i else []:
                    x, deep = x if tag is not None else (x, None)
                    groups.setdefault(plans[k][:i], ([], x, deep))[0].append(k)
                noise = step_noise(sampler, gens, shape, device)  # drawn even if nothing runs: later draws stay put
                # Every call key (width, side, unconditional pass, cached, start timestep, features' shape) -> the
                # states that run it (a cached call fuses only features of one shape: filled at one width).
                by_call: dict[tuple, list[tuple]] = {}
                for prefix, (members, x, deep) in groups.items():
                    split: dict[Step, list[int]] = {}
                    for k in members:
                        split.setdefault(plans[k][i], []).append(k)
                    entered: dict[int, tuple[torch.Tensor, float]] = {}
                    for (w, r, u, c), ks in split.items():
                        if r not in entered:
                            entered[r] = _enter(sampler, i, t, x, r, x0, transform)
                        y, t_from = entered[r]
                        shape_of = tuple(deep[0].shape[1:]) if c else None
                        by_call.setdefault((w, r, u, c, t_from, shape_of), []).append(
                            (prefix + ((w, r, u, c),), ks, y, deep if c else None))
                groups = {}
                for (w, r, u, c, t_from, _), kids in by_call.items():
                    model.set_active_width(w)
                    states = [x for _, _, x, _ in kids]
                    step_eps = to_side(noise, r, transform)
                    call = _Call(model, max_call_images, stats, scale, u, level)
                    if fuse:
                        x = torch.cat(states) if len(states) > 1 else states[0]
                        labels_of_x = None if cond is None else cond.repeat(len(states))
                        eps, deep = call(sampler.model_input(x), t_from, labels_of_x,
                                         deep_cat([d for *_, d in kids]) if c else None)
                        rep = None if step_eps is None else step_eps.repeat(len(kids), 1, 1, 1)
                        x = sampler.step(eps, t_from, x, noise=rep).prev_sample
                        # Copies only when cached: a cached view would pin the whole fused batch.
                        new = [x[j * n : (j + 1) * n] for j in range(len(kids))]
                        new = [v.clone() for v in new] if cache is not None and len(new) > 1 else new
                        deeps = [d for *_, d in kids] if c else \
                            [None if deep is None else deep_rows(deep, j * n, (j + 1) * n) for j in range(len(kids))]
                        if cache is not None and len(kids) > 1 and not c:  # likewise the features
                            deeps = [None if d is None else deep_clone(d) for d in deeps]
                    else:
                        new, deeps = [], []
                        for _, _, s, d in kids:
                            eps, d = call(sampler.model_input(s), t_from, cond, d)
                            new.append(sampler.step(eps, t_from, s, noise=step_eps).prev_sample)
                            deeps.append(d)
                    for (prefix, ks, _, _), x, deep in zip(kids, new, deeps):
                        groups[prefix] = (ks, x, deep)
                        if cache is not None:
                            cache.put((batch, prefix) if tag is None else (batch, prefix, tag),
                                      x if tag is None else (x, deep))
                    bar.update(len(kids) * n)
                if stats is not None:
                    stats.image_evals += sum(len(kids) for kids in by_call.values()) * n
                    stats.shared_image_evals += per_step[i] * n
                    stats.naive_image_evals += K * n
                    stats.naive_denoiser_calls += K
            for ks, x, _ in groups.values():
                out[ks, start : start + n] = sampler.final(x).float().cpu()
            for k, x in resume.get(S, []):  # whole trajectories from the cache
                out[k, start : start + n] = sampler.final(x if tag is None else x[0]).float().cpu()
            bar.n = min(bar.total, (start + n) * sum(per_step))
            bar.refresh()
    return to_images(model, out)  # a latent model's final latents, decoded by its autoencoder


def _enter(sampler: Sampler, i: int, t: float, x: torch.Tensor, side: int, initial: torch.Tensor,
           transform: str) -> tuple[torch.Tensor, float]:
    # The state a step at ``side`` starts from: as is, projected (the initial noise) or grown.
    if side == x.shape[-1]:
        return x, t
    if i == 0:
        return to_side(x, side, transform), t
    return enter_growth(sampler, i, x, side, initial, transform)


@dataclass
class _Call:
    """One step's denoiser call over a batch of states, in chunks of at most ``max_images`` images; with a cache
    ``level``, a full call that fills the deep features or a cached call that reads them."""

    model: Backbone
    max_images: int | None
    stats: SharingStats | None
    scale: float | None
    uncond: object
    level: int | None

    def __call__(self, x: torch.Tensor, t: float, cond: torch.Tensor | None, deep) -> tuple[torch.Tensor, object]:
        chunk = self.max_images or len(x)
        if self.max_images and cond is not None and self.scale not in (None, 1.0) and self.uncond == SAME_WIDTH:
            chunk = max(1, self.max_images // 2)  # one guided call runs its images twice
        eps, deeps = [], []
        for a in range(0, len(x), chunk):
            c = None if cond is None else cond[a : a + chunk]
            if self.level is None or self.uncond != SAME_WIDTH:  # (a plan that chooses passes never caches)
                eps.append(guided_eps(self.model, x[a : a + chunk], t, c, self.scale, self.uncond))
            else:
                e, d = reuse_eps(self.model, x[a : a + chunk], t, c, self.scale, self.level,
                                 None if deep is None else deep_rows(deep, a, a + chunk))
                eps.append(e)
                deeps.append(d)
        if self.stats is not None:
            self.stats.denoiser_calls += len(eps)
        return (eps[0] if len(eps) == 1 else torch.cat(eps)), (deep_cat(deeps) if deeps else None)
