"""The sampling loop: per-sample seeds, a width looked up per sampling step."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.nn.backbone import Backbone, to_images
from ddsm.plan import StepPlan
from ddsm.samplers.base import Sampler, SamplerConfig
from ddsm.samplers.ddim import DDIMSampler
from ddsm.samplers.ddpm import DDPMSampler
from ddsm.samplers.dpm import DPMSolverPP2M
from ddsm.samplers.heun import HeunSampler
from ddsm.samplers.progressive import check_resolutions, enter_growth, family_transform, to_side
from ddsm.samplers.reuse import check_cached, reuse_eps
from ddsm.samplers.unipc import UniPC

if TYPE_CHECKING:  # pragma: no cover
    from ddsm.schedule import Schedule

SAMPLERS: dict[str, type[Sampler]] = {"ddpm": DDPMSampler, "ddim": DDIMSampler, "dpm++": DPMSolverPP2M,
                                      "unipc": UniPC, "heun": HeunSampler}


def make_sampler(schedule: NoiseSchedule, config: SamplerConfig) -> Sampler:
    """Build the sampler named by ``config.kind`` with its timesteps set."""
    sampler = SAMPLERS[config.kind](schedule, config)
    sampler.set_timesteps(config.steps)
    return sampler


def check_full_sides(kind: str, sides: Sequence[int], image_size: int) -> None:
    """A one-line DDSMError for a resolution schedule on a sampler ``kind`` whose state carries history
    (DPM-Solver++)."""
    if SAMPLERS[kind].history and any(side != image_size for side in sides):
        raise DDSMError(f"sampler {kind!r} keeps the previous step's estimate, which a resolution "
                        "change would not fit; sample resolution schedules with 'ddim' or 'ddpm'")


def per_step_widths(widths: float | Sequence[float], num_steps: int, model: Backbone) -> list[float]:
    """Expand a uniform width or check a per-step list: one supernet width per sampling step."""
    if isinstance(widths, (int, float)):
        return [model.check_width(widths)] * num_steps
    widths = list(widths)
    if len(widths) != num_steps:
        raise DDSMError(f"width schedule has {len(widths)} entries but the sampler takes {num_steps} steps (model "
                        "calls: one width per call)")
    return [model.check_width(w) for w in widths]


# -- shared by generate() and generate_many(): per-sample random streams, eval mode


def sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample: sample i's noise depends on ``seeds[i]`` only."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def per_sample_randn(gens: list[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
    """Stack one standard-normal draw of ``shape`` from each sample's generator, moved to ``device``."""
    # Noise is drawn on the CPU from each sample's own generator, so a sample
    # is the same whichever batch or device it lands on.
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)


def step_noise(sampler: Sampler, gens: list[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor | None:
    """The fresh noise one sampling step consumes (None for a deterministic sampler).

    Drawn at every step, the last included: DDIM with eta > 0 requires it there
    (its sigma is zero, so the value does not matter), and nothing is drawn
    after the last step, so no earlier draw moves.
    """
    return per_sample_randn(gens, shape, device) if sampler.stochastic else None


def visited_timesteps(sampler: Sampler) -> list[float]:
    """The sampler's visited timesteps, or an error if ``set_timesteps`` was never called."""
    if sampler.timesteps is None:
        raise ValueError("sampler has no timesteps; call sampler.set_timesteps(num_inference_steps) first")
    return sampler.timesteps.tolist()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` in eval mode (no dropout) and restore its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# -- the loop


def _widths_and_sides(widths, resolutions, sampler: Sampler) -> tuple:
    # A Schedule fixes the sampler it was made for; a plan carries its sides (and its guidance choices).
    if hasattr(widths, "sampler") and hasattr(widths, "plan"):
        if widths.sampler != sampler.config:
            raise DDSMError(f"schedule is for sampler {widths.sampler.model_dump()}, but this sampler is "
                            f"{sampler.config.model_dump()}; build the sampler from the schedule's settings")
        widths = widths.plan()
    if isinstance(widths, StepPlan):
        if resolutions is not None and widths.resolutions is not None and tuple(resolutions) != widths.resolutions:
            raise DDSMError("give the sides once: in the StepPlan or as resolutions=, not both")
        return list(widths.widths), widths.resolutions if resolutions is None else resolutions, widths
    return widths, resolutions, None


def check_guidance_scale(model: Backbone, guidance_scale: float | None, *, labelled: bool = False) -> None:
    """A one-line DDSMError for labels (``labelled``) or a guidance scale given to an unconditional model, or a scale
    that is not finite or negative."""
    if not getattr(model, "num_classes", 0) and (labelled or guidance_scale is not None):
        what = "class labels" if labelled else f"guidance scale {guidance_scale:g}"
        raise DDSMError(f"this model is unconditional (num_classes 0); it takes no class labels and no guidance "
                        f"scale (got {what})")
    if guidance_scale is not None and not (math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise DDSMError(f"guidance scale {guidance_scale!r} is not valid; give a finite number >= 0 (1: the "
                        "conditional prediction alone, 0: unconditional)")
    if guidance_scale not in (None, 1.0) and not getattr(model, "has_null_label", True):
        raise DDSMError(f"guidance scale {guidance_scale:g} needs a null (unconditional) label, which this model "
                        "has not; sample it with scale 1, or slim it with --null-label last if its last class "
                        "embedding is one")


def check_guidance(model: Backbone, labels: Any, guidance_scale: float | None, seeds: Sequence[int]
                   ) -> tuple[torch.Tensor | None, float | None]:
    """(one label per seed as a CPU LongTensor, or None for an unconditional model; the guidance scale or None), or
    a one-line DDSMError (:func:`check_guidance_scale`, a label outside the model's classes). ``labels`` None: each
    seed's own class (:func:`seed_labels`)."""
    check_guidance_scale(model, guidance_scale, labelled=labels is not None)
    if labels is None:
        labels = seed_labels(model, seeds)
        if labels is None:
            return None, None
    k, n = model.num_classes, len(seeds)
    if isinstance(labels, str):
        raise DDSMError(f"give integer class labels, got {labels!r}")
    y = torch.as_tensor(labels).cpu()
    if y.is_floating_point() or y.dtype == torch.bool or y.ndim != 1 or len(y) != n:
        raise DDSMError(f"give one integer class label per seed ({n}), got {tuple(y.shape)} of {y.dtype}")
    bad = y[(y < 0) | (y >= k)]
    if len(bad):
        raise DDSMError(f"class label {int(bad[0])} is not one of this model's classes; valid: 0..{k - 1}")
    return y.long(), guidance_scale


def seed_labels(model: Backbone, seeds: Sequence[int]) -> list[int] | None:
    """The labels evaluators and the verdict sample a conditional model with: seed i has class i mod num_classes
    (a balanced cycle, and a function of the seed, so shared trajectories stay valid); None if unconditional."""
    k = getattr(model, "num_classes", 0)
    return [int(s) % k for s in seeds] if k else None


#: ``guided_eps``'s default unconditional width: the conditional pass's own (one batched call)
SAME_WIDTH = "same"


def guided_eps(model: Backbone, x: torch.Tensor, t: Any, cond: torch.Tensor | None, scale: float | None,
               uncond_width: "float | None | str" = SAME_WIDTH) -> torch.Tensor:
    """ε at ``x``: unconditional (``cond`` None), conditional, or classifier-free guided.

    The conditional pass runs at the model's active width; the unconditional one at ``uncond_width``
    (:data:`SAME_WIDTH`: the same width, both passes in one batched call; None: no guidance at this step, the
    conditional prediction alone). The model is left at the conditional width.
    """
    if cond is None:  # an unconditional call is the plain forward it always was (wrapped forwards keep working)
        return model(x, t)
    if scale is None or scale == 1.0 or uncond_width is None:
        return model(x, t, cond=cond)
    null = torch.full_like(cond, model.num_classes)
    if uncond_width == SAME_WIDTH or model.check_width(uncond_width) == model.width:
        if torch.is_tensor(t) and t.ndim == 1:  # one timestep per sample: both halves need theirs
            t = torch.cat([t, t])
        eps_c, eps_u = model(torch.cat([x, x]), t, cond=torch.cat([cond, null])).chunk(2)
    else:  # two widths: two calls
        width = model.width
        eps_c = model(x, t, cond=cond)
        model.set_active_width(uncond_width)
        try:
            eps_u = model(x, t, cond=null)
        finally:
            model.set_active_width(width)
    return eps_u + scale * (eps_c - eps_u)


def check_uncond(model: Backbone, plan: StepPlan, scale: float | None) -> list:
    """The unconditional width of every step of ``plan`` for :func:`guided_eps`, or a one-line DDSMError when the
    plan makes guidance choices that cannot apply (an unconditional model, no guidance scale, scale 1)."""
    if plan.uncond is None:
        return [SAME_WIDTH] * len(plan)
    if not getattr(model, "num_classes", 0):
        raise DDSMError("this schedule chooses the unconditional pass per step (uncond widths), but the model is "
                        "unconditional (num_classes 0); use a schedule without guidance choices")
    if scale is None or scale == 1.0:
        raise DDSMError(f"this schedule chooses the unconditional pass per step (uncond widths), but the guidance "
                        f"scale is {scale!r}: nothing is guided; give a guidance scale other than 1")
    # at the step's own width it is the plain guided call (one batch; shares prefixes with plain guided plans)
    return [None if u is None else SAME_WIDTH if model.check_width(u) == model.check_width(w) else model.check_width(u)
            for w, u in zip(plan.widths, plan.uncond)]


@torch.no_grad()
def generate(
    model: Backbone,
    sampler: Sampler,
    widths: "float | Sequence[float] | StepPlan | Schedule",
    seeds: Sequence[int],
    *,
    resolutions: Sequence[int] | None = None,
    transform: str = "auto",
    batch_size: int = 256,
    progress: bool = False,
    labels: "Sequence[int] | torch.Tensor | None" = None,
    guidance_scale: float | None = None,
) -> torch.Tensor:
    """Sample one image per seed; step i runs the supernet at ``widths[i]`` on a state of side ``resolutions[i]``.

    A class-conditional model takes ``labels`` (one per seed; None: seed s has
    class s mod num_classes, :func:`seed_labels`) and, optionally, a classifier-free
    ``guidance_scale`` s (None: the sampler config's): ε = ε(x, ∅) + s (ε(x, y) − ε(x, ∅)),
    the two passes in one batched call; s = 1 (or None) is the conditional prediction alone. A plan or schedule
    with per-step guidance choices (``uncond``) runs the unconditional pass at its own width, or skips it; one
    with cached steps runs them on the deep features of the last full step (:mod:`ddsm.samplers.reuse`).

    ``widths`` is one width for every step, a per-step list, a
    :class:`~ddsm.plan.StepPlan` or a :class:`~ddsm.schedule.Schedule` (whose
    sampler settings must be the sampler's); a plan or schedule brings its own
    sides. ``resolutions`` (None: the image size throughout) never decreases
    and ends at the image size; see :mod:`ddsm.samplers.progressive`. Returns
    a float32 CPU tensor (N, C, H, W) in [-1, 1]-ish data units (a latent model's decoded by its autoencoder).
    """
    steps = visited_timesteps(sampler)
    widths, resolutions, given = _widths_and_sides(widths, resolutions, sampler)
    plan = per_step_widths(widths, len(steps), model)
    sides = check_resolutions(resolutions, model, len(steps))
    check_full_sides(sampler.config.kind, sides, model.image_size)
    transform = family_transform(model, transform)
    device = next(model.parameters()).device
    if guidance_scale is None:
        guidance_scale = sampler.config.guidance_scale
    elif sampler.config.guidance_scale is not None and guidance_scale != sampler.config.guidance_scale:
        raise DDSMError(f"guidance_scale {guidance_scale:g} differs from the sampler's "
                        f"{sampler.config.guidance_scale:g}; give one of them")
    # labels None: each seed's own class, as the evaluators, the verdict and the export's timing sample it
    y, scale = check_guidance(model, labels, guidance_scale, seeds)
    full_plan = given if given is not None else StepPlan(tuple(plan))
    uncond = check_uncond(model, full_plan, scale)
    cached = check_cached(model, full_plan, sides=sides)
    c, s = model.in_channels, model.image_size
    out = []
    bar = tqdm(total=len(seeds) * len(steps), desc="sampling", unit="call", disable=not progress)
    with eval_mode(model), bar:
        for start in range(0, len(seeds), batch_size):
            gens = sample_generators(seeds[start : start + batch_size])
            cond = None if y is None else y[start : start + batch_size].to(device)
            initial = per_sample_randn(gens, (c, s, s), device)
            x = sampler.initial_state(to_side(initial, sides[0], transform))
            deep = None  # the features of the last full step, in a plan with cached steps
            for i, (t, w, u, side) in enumerate(zip(steps, plan, uncond, sides)):
                if side != x.shape[-1]:
                    x, t = enter_growth(sampler, i, x, side, initial, transform)
                model.set_active_width(w)
                if cached is None:
                    eps = guided_eps(model, sampler.model_input(x), t, cond, scale, u)
                else:
                    eps, deep = reuse_eps(model, sampler.model_input(x), t, cond, scale, full_plan.cache_level,
                                          deep if cached[i] else None)
                noise = to_side(step_noise(sampler, gens, (c, s, s), device), side, transform)
                x = sampler.step(eps, t, x, noise=noise).prev_sample
                bar.update(len(gens))
            out.append(to_images(model, sampler.final(x)).float().cpu())  # a latent model's: decoded
    return torch.cat(out)
