"""Sampling many width schedules at once, sharing every computation they have in common.

A search scores hundreds of candidate schedules on the same per-sample seeds
(common random numbers: differences between candidates then come from the
widths alone, not from the noise). Two observations make this much cheaper
than calling :func:`~ddsm.samplers.loop.generate` once per candidate:

- Candidates whose widths agree on steps 0..i are in exactly the same state
  after step i (same start noise, same per-step noise, same denoiser calls), so
  that state is computed once per distinct *prefix*, not once per candidate.
  The candidates form a prefix tree; sampling walks it one level per step.
- All distinct states that run the same width at a step go through the
  denoiser in one call, concatenated along the batch, so the number of calls
  per step is at most the number of widths.

Stochastic samplers (DDPM, DDIM with eta > 0) draw each sample's step noise
once per step from that sample's generator and give the same noise to every
candidate, exactly as ``generate`` would draw it for each one alone. The result
for every candidate therefore equals ``generate`` with its schedule, up to
float rounding of batched convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ddsm.errors import DDSMError
from ddsm.nn.unet import SlimUNet
from ddsm.samplers.base import Sampler
from ddsm.samplers.loop import eval_mode, per_sample_randn, per_step_widths, sample_generators, step_noise, visited_timesteps


@dataclass
class SharingStats:
    """How much denoiser work ``generate_many`` ran, against sampling each candidate alone.

    Pass one instance to several calls to accumulate their totals.
    """

    image_evals: int = 0  # denoiser evaluations of one image that actually ran
    naive_image_evals: int = 0  # K * N * steps: what one generate() per candidate would run
    denoiser_calls: int = 0  # forward calls of the supernet
    naive_denoiser_calls: int = 0  # K * steps * seed batches

    @property
    def saved_fraction(self) -> float:
        """Share of the naive image evaluations that sharing avoided (0 when nothing ran)."""
        return 1.0 - self.image_evals / self.naive_image_evals if self.naive_image_evals else 0.0


def count_distinct_prefixes(plans: Sequence[Sequence[float]]) -> list[int]:
    """Per step, how many distinct states the candidates are in (the denoiser evaluations per sample)."""
    steps = len(plans[0]) if plans else 0
    return [len({tuple(p[: i + 1]) for p in plans}) for i in range(steps)]


@torch.no_grad()
def generate_many(
    model: SlimUNet,
    sampler: Sampler,
    schedules: Sequence[Sequence[float]],
    seeds: Sequence[int],
    *,
    batch_size: int = 256,
    max_call_images: int | None = None,
    stats: SharingStats | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample every schedule on the same seeds; returns float32 CPU (K, N, C, H, W).

    ``schedules[k][i]`` is candidate k's width at sampling step i. Seeds are
    processed ``batch_size`` at a time; within a batch, one denoiser call per
    step and width holds every distinct state that runs that width (up to
    ``max_call_images`` images per call when given, to bound memory on a GPU).
    ``stats``, when given, is incremented with the work done.
    """
    steps = visited_timesteps(sampler)
    if len(schedules) == 0:
        raise DDSMError("generate_many needs at least one schedule; got none")
    if batch_size <= 0 or (max_call_images is not None and max_call_images <= 0):
        raise DDSMError(f"batch_size ({batch_size}) and max_call_images ({max_call_images}) must be positive")
    plans = [per_step_widths(list(s), len(steps), model) for s in schedules]
    device = next(model.parameters()).device
    c, side = model.config.in_channels, model.config.image_size
    shape = (c, side, side)
    K, N = len(plans), len(seeds)
    per_step = count_distinct_prefixes(plans)
    out = torch.empty((K, N, *shape), dtype=torch.float32)
    bar = tqdm(total=sum(per_step) * N, desc=f"sampling {K} schedules", unit="img", disable=not progress)
    with eval_mode(model), bar:
        for start in range(0, N, batch_size):
            gens = sample_generators(seeds[start : start + batch_size])
            n = len(gens)
            # Each group is (candidates sharing the prefix so far, their common state).
            groups: list[tuple[list[int], torch.Tensor]] = [(list(range(K)), per_sample_randn(gens, shape, device))]
            for i, t in enumerate(steps):
                # Split every group by this step's width: children start from the parent's state.
                children: dict[float, list[tuple[list[int], torch.Tensor]]] = {}
                for members, x in groups:
                    by_width: dict[float, list[int]] = {}
                    for k in members:
                        by_width.setdefault(plans[k][i], []).append(k)
                    for w, ks in by_width.items():
                        children.setdefault(w, []).append((ks, x))
                noise = step_noise(sampler, gens, shape, device)
                groups = []
                for w, kids in children.items():
                    x = torch.cat([state for _, state in kids]) if len(kids) > 1 else kids[0][1]
                    model.set_active_width(w)
                    eps = _denoise(model, x, t, max_call_images, stats)
                    rep = None if noise is None else noise.repeat(len(kids), 1, 1, 1)
                    x = sampler.step(eps, t, x, noise=rep).prev_sample
                    for j, (ks, _) in enumerate(kids):
                        groups.append((ks, x[j * n : (j + 1) * n]))
                    bar.update(len(kids) * n)
                if stats is not None:
                    stats.image_evals += sum(len(kids) for kids in children.values()) * n
                    stats.naive_image_evals += K * n
                    stats.naive_denoiser_calls += K
            for ks, x in groups:
                out[ks, start : start + n] = x.float().cpu()
    return out


def _denoise(model: SlimUNet, x: torch.Tensor, t: float, max_images: int | None, stats: SharingStats | None) -> torch.Tensor:
    chunk = max_images or len(x)
    parts = [model(x[a : a + chunk], t) for a in range(0, len(x), chunk)]
    if stats is not None:
        stats.denoiser_calls += len(parts)
    return parts[0] if len(parts) == 1 else torch.cat(parts)
