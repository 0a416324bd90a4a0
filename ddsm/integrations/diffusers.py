"""Run a ddsm supernet and a schedule file inside a standard diffusers scheduler loop.

Three pieces, each usable on its own:

- ``make_diffusers_scheduler`` builds a ``DDIMScheduler``, ``DDPMScheduler`` or ``DPMSolverMultistepScheduler``
  whose betas, clipping, timesteps and previous-step rule are ddsm's own, so
  ``scheduler.step`` does what ddsm's sampler step does.
- ``ScheduledDenoiser`` wraps a supernet and a ``Schedule``: called as
  ``model(sample, t)`` it runs the supernet at the width the schedule gives
  the step visiting ``t`` and returns its output (ε, or v for a v-predicting student: the scheduler is
  made with the model's ``prediction_type``).
- ``sample_with_diffusers`` is the diffusers loop with ddsm's per-sample
  seeding, so it returns the same images as ``ddsm.samplers.generate`` for
  the same seeds and schedule (to float tolerance).

Resolution schedules (Spectral Progressive Diffusion): the loop grows the
state between diffusers steps exactly as ddsm does, and runs the denoiser at
the grown state's fractional timestep. diffusers' schedulers only know their
integer grid, so the grown state is then re-expressed at the step's grid
timestep with the same predicted clean image and noise before
``scheduler.step``, and DDIM's ``eta`` for that step is rescaled so its noise
scale is the one ddsm uses from the fractional timestep: DDIM gives ddsm's
samples at any eta (tested). DDPM's posterior variance and its own noise
draws at reduced sides differ from ddsm's, so DDPM resolution schedules give
valid samples, reproducible per seed, but not ddsm's.

A hand-written loop looks like this (``eta`` is an argument of diffusers'
DDIM ``step``, not a scheduler setting, so it comes from the schedule)::

    denoiser = ScheduledDenoiser(net, schedule)
    scheduler = make_diffusers_scheduler(net, schedule.sampler)
    for t in scheduler.timesteps:
        x = scheduler.step(denoiser(x, t), t, x, eta=schedule.sampler.eta).prev_sample   # DDIM

diffusers is optional: it is imported inside the functions that need it, and
a missing install is a one-line ``DDSMError`` saying ``pip install diffusers``.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any, Sequence

import torch

from ddsm.checkpoint import Supernet, load_supernet
from ddsm.config import ModelConfig
from ddsm.diffusion.noise import NoiseSchedule, make_betas
from ddsm.diffusion.prediction import eps_and_x0, model_target
from ddsm.errors import DDSMError
from ddsm.plan import StepPlan
from ddsm.samplers.base import SamplerConfig, step_grid, visited
from ddsm.samplers.reuse import check_cached, reuse_eps
from ddsm.nn.backbone import to_images
from ddsm.samplers.loop import (check_full_sides, check_guidance, check_uncond, eval_mode, guided_eps,
                                per_sample_randn, per_step_widths, sample_generators)
from ddsm.samplers.progressive import check_resolutions, family_transform, grow_at, to_side
from ddsm.schedule import Schedule

__all__ = ["ScheduledDenoiser", "make_diffusers_scheduler", "sample_with_diffusers"]

#: diffusers' name for each ddsm beta schedule (informative: the exact betas are passed as ``trained_betas``)
BETA_SCHEDULE_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


class _OneLineLog(logging.Handler):
    """diffusers' log records as one ``warning: diffusers: ...`` line each on stderr, cut to a sane length (its own
    handler prints them whole: a config key it does not know is repeated with its value, however large), each
    distinct line once (diffusers repeats a config's warning every time the config builds a model)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        from ddsm.limits import MAX_MESSAGE_CHARS, clip

        try:
            line = clip("warning: diffusers: " + " ".join(record.getMessage().split()), MAX_MESSAGE_CHARS)
            if line not in self.seen:
                self.seen.add(line)
                sys.stderr.write(line + "\n")
        except Exception:  # a log line must never break the command
            self.handleError(record)


def import_diffusers() -> Any:
    """The ``diffusers`` module, or a one-line DDSMError with the install command.

    On first import, diffusers' warnings are routed to one line each (:class:`_OneLineLog`).
    """
    try:
        import diffusers
        from diffusers.utils import logging as diffusers_logging
    except ImportError as e:
        raise DDSMError(f"the diffusers bridge needs the diffusers package ({e}); pip install diffusers") from None
    root = logging.getLogger("diffusers")
    if not any(isinstance(h, _OneLineLog) for h in root.handlers):
        diffusers_logging.disable_default_handler()
        root.addHandler(_OneLineLog(logging.WARNING))
    return diffusers


# -- the scheduler


def make_diffusers_scheduler(supernet_config_or_net: Supernet | ModelConfig, sampler_config: SamplerConfig) -> Any:
    """A diffusers ``DDIMScheduler`` / ``DDPMScheduler`` that steps exactly like ddsm's sampler.

    The returned scheduler already has its timesteps set: they are ddsm's
    visited timesteps for ``sampler_config`` (``scheduler.timesteps`` equals
    ``Schedule.timesteps``). DDIM's ``eta`` is not part of a diffusers
    scheduler; pass ``eta=sampler_config.eta`` to ``scheduler.step``.

    Raises a one-line DDSMError when diffusers cannot reproduce ddsm's walk:
    diffusers' DDIM takes no custom timesteps and steps from t to
    ``t - T // steps``, which only agrees with ddsm's next visited timestep for
    evenly spaced grids (``leading`` spacing always; ``trailing`` when the step
    count divides T; ``linspace`` rarely).
    """
    diffusers = import_diffusers()
    config = model_config_of(supernet_config_or_net)
    diff = config.diffusion
    T = diff.num_timesteps
    common = dict(
        num_train_timesteps=T,
        # ddsm's own float64 betas, rounded once to float32 by diffusers. The
        # named schedule is recorded for readers of the scheduler's config; it
        # is ignored when trained_betas is given (diffusers' float32 linspace
        # of the linear schedule differs from ddsm's in the last bit).
        beta_schedule=BETA_SCHEDULE_NAMES[diff.beta_schedule],
        beta_start=diff.beta_start,
        beta_end=diff.beta_end,
        trained_betas=make_betas(diff).tolist(),
        prediction_type=diff.prediction_type,  # what the supernet outputs: diffusers converts it as ddsm does
        clip_sample=sampler_config.clip_sample and not diff.latent,  # latents are never clipped
        clip_sample_range=1.0,  # ddsm clips x0 to [-1, 1]
        thresholding=False,
        rescale_betas_zero_snr=False,
        timestep_spacing=sampler_config.timestep_spacing,
        steps_offset=0,  # ddsm's grids carry no offset
    )
    ours = step_grid(sampler_config, T)
    grid = [int(round(t)) for t in ours.tolist()]
    if sampler_config.kind == "heun":
        # ddsm's Heun (ddsm.samplers.heun): diffusers' on ddsm's grid, alpha_bar set first (its sigmas come from it)
        scheduler = diffusers.HeunDiscreteScheduler(
            **{k: v for k, v in common.items() if k not in ("thresholding", "rescale_betas_zero_snr")})
        use_ddsm_alpha_bar(scheduler, NoiseSchedule(diff))
        return pin_grid(scheduler, grid, lambda sched, set_timesteps: set_timesteps(timesteps=grid))
    if sampler_config.kind == "dpm++":
        # ddsm's DPM-Solver++(2M) (ddsm.samplers.dpm): diffusers' on ddsm's own integral grid, alpha_bar set first
        # (the solver's sigmas are computed from it when the timesteps are set)
        scheduler = diffusers.DPMSolverMultistepScheduler(
            **{k: v for k, v in common.items() if k not in ("clip_sample", "clip_sample_range")}, solver_order=2,
            algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero")
        use_ddsm_alpha_bar(scheduler, NoiseSchedule(diff))
        return pin_grid(scheduler, grid, lambda sched, set_timesteps: set_timesteps(timesteps=grid))
    if sampler_config.kind == "unipc":
        # ddsm's UniPC (ddsm.samplers.unipc): diffusers' defaults, alpha_bar set before the timesteps (its sigmas are
        # computed from it there)
        scheduler = diffusers.UniPCMultistepScheduler(
            **{k: v for k, v in common.items() if k not in ("clip_sample", "clip_sample_range")}, solver_order=2,
            solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero")
        use_ddsm_alpha_bar(scheduler, NoiseSchedule(diff))

        def unipc_grid(sched, set_timesteps):
            # UniPC's set_timesteps takes no explicit grid and its 'leading' differs from DDIM's: it resets the
            # solver's state for this many steps, then ddsm's grid and its sigmas, sqrt((1 - alpha_bar) /
            # alpha_bar) and 0 after the last step, go where set_timesteps puts them
            set_timesteps(len(grid))
            steps = torch.tensor(grid, dtype=torch.int64)
            ab = sched.alphas_cumprod[steps].double()
            sched.timesteps = steps
            sched.sigmas = torch.cat([((1 - ab) / ab).sqrt(), torch.zeros(1, dtype=torch.float64)]).float()

        return pin_grid(scheduler, grid, unipc_grid)
    if sampler_config.kind == "ddim":
        # set_alpha_to_one: after the last step alpha_bar is 1 (the clean image), as in ddsm.
        scheduler = diffusers.DDIMScheduler(**common, set_alpha_to_one=True)
        scheduler.set_timesteps(sampler_config.steps)
        check_ddim_walk(scheduler, ours, sampler_config)
    else:
        # "fixed_small" is the posterior variance ddsm's DDPM step adds.
        scheduler = diffusers.DDPMScheduler(**common, variance_type="fixed_small")
        # DDPM takes explicit timesteps and steps to the next one in the list,
        # so ddsm's grid is passed as is (it is integral: spaced grids are rounded, a student's phi is whole).
        pin_grid(scheduler, grid, lambda sched, set_timesteps: set_timesteps(timesteps=grid))
    use_ddsm_alpha_bar(scheduler, NoiseSchedule(diff))
    return scheduler


def pin_grid(scheduler: Any, grid: list[int], apply: Any) -> Any:
    """Set ddsm's ``grid`` on ``scheduler`` with ``apply(scheduler, its class's set_timesteps)``, and make the
    scheduler's own ``set_timesteps(n)`` do the same: a diffusers pipeline calls it with its step count before
    sampling, which would otherwise put the scheduler's own spacing back (DPM-Solver++, UniPC and DDPM space
    'leading' unlike DDIM). A copy of the scheduler keeps the behaviour, on itself."""

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, **kwargs: Any) -> None:
        if num_inference_steps not in (None, len(grid)) or kwargs:
            raise DDSMError(f"this scheduler samples ddsm's schedule of {len(grid)} steps; num_inference_steps "
                            f"{num_inference_steps!r} does not match it")
        apply(self, type(self).set_timesteps.__get__(self))
        if device is not None:
            self.timesteps = self.timesteps.to(device)

    scheduler.set_timesteps = types.MethodType(set_timesteps, scheduler)
    scheduler.set_timesteps()
    return scheduler


def model_config_of(obj: Supernet | ModelConfig) -> ModelConfig:
    """The ModelConfig of a loaded supernet, or the config itself."""
    if isinstance(obj, Supernet):
        return obj.config
    if isinstance(obj, ModelConfig):
        return obj
    raise DDSMError(f"expected a ddsm Supernet or ModelConfig, got {type(obj).__name__}")


def check_ddim_walk(scheduler: Any, ours: torch.Tensor, sampler_config: SamplerConfig) -> None:
    """Refuse a DDIM scheduler whose visited or previous timesteps differ from ddsm's."""
    theirs = [float(t) for t in scheduler.timesteps]
    T, n = scheduler.config.num_train_timesteps, scheduler.num_inference_steps
    # The rule DDIMScheduler.step uses for the timestep it moves to (negative: the clean image).
    their_prev = [max(t - T // n, -1.0) for t in theirs]
    our_prev = ours.tolist()[1:] + [-1.0]
    if (theirs != ours.tolist() or their_prev != our_prev) and sampler_config.timesteps is not None:
        raise DDSMError(
            f"diffusers' DDIMScheduler cannot walk this student's timesteps {ours.tolist()[:6]} (it steps from t to "
            f"t - {T // n}); sample it with kind 'ddpm' in diffusers, or distil it with --spacing leading"
        )
    if theirs != ours.tolist() or their_prev != our_prev:
        raise DDSMError(
            f"diffusers' DDIMScheduler cannot walk ddsm's timesteps for timestep_spacing "
            f"{sampler_config.timestep_spacing!r} with {n} of {T} steps (it steps from t to t - {T // n}); "
            f"use timestep_spacing 'leading' (or 'trailing' with a step count dividing {T})"
        )


def use_ddsm_alpha_bar(scheduler: Any, noise: NoiseSchedule) -> None:
    """Step with ddsm's alpha_bar (float64 product, rounded once) instead of diffusers' float32 product.

    diffusers multiplies the float32 alphas, which drifts from the exact product
    by up to ~1.3e-5 relative for the cosine schedule near t = T - 1 (where
    1 - 0.999 keeps few float32 digits). ddsm's sampler uses the float64 product
    rounded to float32, so the same numbers are put here; ``step`` reads only
    ``alphas_cumprod`` (and DDIM's ``final_alpha_cumprod``, already 1).
    """
    grid = torch.arange(noise.num_timesteps, dtype=torch.float64)
    scheduler.alphas_cumprod = noise.alpha_bar_at(grid).to(torch.float32)


# -- the denoiser


def as_schedule(net: Supernet, schedule: Schedule | StepPlan, sampler: SamplerConfig | None = None) -> Schedule:
    """A Schedule as it is, or a StepPlan (or width list) made one for ``sampler`` on ``net``."""
    if isinstance(schedule, Schedule):
        if sampler is not None and sampler != schedule.sampler:
            raise DDSMError("a schedule file fixes its sampler; drop sampler= or pass the plan instead")
        return schedule
    if sampler is None:
        raise DDSMError("a StepPlan needs sampler=SamplerConfig(...) to say which sampler it is for")
    return Schedule.for_model(net.config, sampler, StepPlan.of(schedule))


class ScheduledDenoiser(torch.nn.Module):
    """A supernet that runs each sampling step at the width a schedule gives it.

    ``denoiser(sample, t)`` looks up which step of the schedule visits ``t``
    (its index in the schedule's timesteps), sets that step's width on the
    supernet, and returns its output (in the model's prediction type). The sampler maths stays in the
    diffusers scheduler; only the width changes per step.
    """

    def __init__(self, net: Supernet, schedule: Schedule | StepPlan, sampler: SamplerConfig | None = None, *,
                 allow_new_weights: bool = False) -> None:
        super().__init__()
        if not isinstance(net, Supernet):
            raise DDSMError(f"ScheduledDenoiser needs a ddsm Supernet (from load_supernet), got {type(net).__name__}")
        schedule = as_schedule(net, schedule, sampler)
        # A schedule for another supernet (fingerprint, widths, step count or
        # timesteps) is one DDSMError naming every mismatch; one measured on
        # other weights is refused unless allow_new_weights.
        schedule.check(net.config)
        self.weights_override = schedule.check_weights(net, allow_new=allow_new_weights)
        self.net = net
        self.model = net.model  # registered as a submodule: .to(), .eval() reach the supernet
        self.schedule = schedule
        ts = schedule.timesteps
        if ts is None:  # optional in the file; check() guarantees the spacing's grid otherwise
            ts = visited(schedule.sampler, net.config.diffusion.num_timesteps).tolist()
        self.timesteps: list[float] = [float(t) for t in ts]
        self.widths: list[float] = per_step_widths(schedule.widths, len(self.timesteps), net.model)
        self.resolutions: list[int] = check_resolutions(schedule.resolutions, net.config.geometry, len(self.timesteps))
        # per step, the unconditional pass's width (or no guidance there), as ddsm's loop runs it
        self.uncond: list = check_uncond(net.model, schedule.plan(), schedule.sampler.guidance_scale)
        # cached steps reuse the deep features of the last full step called, in step order (ddsm.samplers.reuse)
        self.cached = check_cached(net.model, schedule.plan(), sides=self.resolutions)
        self._deep: tuple[int, Any] | None = None  # (step that filled it, features)
        # a call's index from its timestep: unique, but for a second-order sampler's repeated ones, which are the
        # next of their calls after the last one made (the corrector, then the next step's first call)
        self._calls_at: dict[float, list[int]] = {}
        for i, t in enumerate(self.timesteps):
            self._calls_at.setdefault(t, []).append(i)
        self._last = -1  # the last call's index

    @classmethod
    def load(cls, checkpoint: str, schedule_path: str, *, device: str | torch.device = "cpu",
             allow_new_weights: bool = False) -> "ScheduledDenoiser":
        """Load a supernet (run folder, file or shipped name) and a schedule file checked against it."""
        net = load_supernet(checkpoint, device=device)
        return cls(net, Schedule.load(schedule_path, model=net.config), allow_new_weights=allow_new_weights)

    def width_at(self, t: torch.Tensor | float) -> float:
        """The width of the next denoiser call at timestep ``t``."""
        return self.widths[self.step_index(t)]

    def step_index(self, t: torch.Tensor | float) -> int:
        """Which call of the schedule (0: the noisiest) the next call at timestep ``t`` is: the call that visits
        ``t`` (for a repeated timestep of a second-order sampler, the first such call after the last one made)."""
        t = torch.as_tensor(t).detach().cpu().flatten()
        # A batch runs at one width, so a per-sample timestep vector must hold one value.
        if t.numel() == 0 or (t != t[0]).any():
            raise DDSMError(f"one timestep per call is needed (the batch runs at one width), got {t.tolist()}")
        calls = self._calls_at.get(float(t[0]))
        if calls is None:
            raise DDSMError(f"timestep {float(t[0]):g} is not visited by this schedule; its timesteps are "
                            f"{[int(x) if x.is_integer() else x for x in self.timesteps]}")
        return next((i for i in calls if i > self._last), calls[0])

    def make_scheduler(self) -> Any:
        """The diffusers scheduler matching this schedule's sampler settings."""
        return make_diffusers_scheduler(self.net, self.schedule.sampler)

    def forward(self, sample: torch.Tensor, t: torch.Tensor | float,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise for ``sample`` (B, C, H, W) at timestep ``t``, at the scheduled width; a conditional
        model's ``class_labels`` (B,) guided by the schedule's ``sampler.guidance_scale``, as ddsm's loop does."""
        i = self._last = self.step_index(t)
        if sample.shape[-1] != self.resolutions[i]:
            raise DDSMError(f"step {i} runs at resolution {self.resolutions[i]}, but the sample has side "
                            f"{sample.shape[-1]}; grow the state between steps (see sample_with_diffusers)")
        if self.model.num_classes and class_labels is None:  # as diffusers' own class-conditional UNet2DModel
            raise DDSMError(f"this model is class-conditional (num_classes {self.model.num_classes}); pass "
                            "class_labels, one per sample (the null label is num_classes)")
        if class_labels is not None:  # a list too; range and shape are checked by the backbone's own rule
            class_labels = torch.as_tensor(class_labels, device=sample.device)
        self.model.set_active_width(self.widths[i])
        # The timestep as the float ddsm's loop passes, whatever dtype the scheduler holds it in.
        if self.cached is None:
            return guided_eps(self.model, sample, self.timesteps[i], class_labels,
                              self.schedule.sampler.guidance_scale, self.uncond[i])
        deep = None
        if self.cached[i]:
            if self._deep is None or self._deep[0] >= i or self._deep[1][0].shape[0] != sample.shape[0]:
                raise DDSMError(f"step {i} is cached but no full step ran before it in this sampling run (call the "
                                "model once per step, noisiest first, as DDPM and DDIM schedulers do)")
            deep = self._deep[1]
        eps, filled = reuse_eps(self.model, sample, self.timesteps[i], class_labels,
                                self.schedule.sampler.guidance_scale, self.schedule.cache_level, deep)
        if deep is None:
            self._deep = (i, filled)
        return eps


# -- the loop


@torch.no_grad()
def sample_with_diffusers(
    net: Supernet,
    schedule: Schedule | StepPlan,
    seeds: Sequence[int],
    *,
    sampler: SamplerConfig | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    allow_new_weights: bool = False,
    labels: Sequence[int] | None = None,
) -> torch.Tensor:
    """Sample one image per seed with a diffusers scheduler loop; (N, C, H, W) float32 on the CPU.

    A class-conditional model samples seed i with ``labels[i]`` (None: class
    seed mod num_classes, as :func:`ddsm.samplers.generate`), guided by the
    schedule's ``sampler.guidance_scale``.

    Seeding is ddsm's: sample i draws its initial noise and then each step's
    noise from its own ``torch.Generator().manual_seed(seeds[i])`` on the CPU,
    so an image depends on its seed only (not on the batch or the device), and
    equals ``ddsm.samplers.generate`` with the same schedule and seeds. A
    :class:`~ddsm.plan.StepPlan` runs with ``sampler`` (its settings).
    ``device`` defaults to the supernet's; the supernet is moved there for the
    call and back afterwards. A schedule measured on other weights than
    ``net``'s is refused unless ``allow_new_weights``.
    """
    if batch_size <= 0:
        raise DDSMError(f"batch_size must be positive, got {batch_size}")
    # checks the schedule against the supernet: architecture, and weights unless allowed
    denoiser = ScheduledDenoiser(net, schedule, sampler, allow_new_weights=allow_new_weights)
    scheduler = denoiser.make_scheduler()
    cfg = denoiser.schedule.sampler
    home = next(net.model.parameters()).device
    device = torch.device(device) if device is not None else home
    c, s = net.config.geometry.in_channels, net.config.geometry.image_size
    sides = denoiser.resolutions
    check_full_sides(cfg.kind, sides, s)
    transform = family_transform(net.config.geometry)
    noise_levels = NoiseSchedule(net.config.diffusion)
    y, _ = check_guidance(net.model, labels, cfg.guidance_scale, seeds)
    out = []
    try:
        net.model.to(device)
        with eval_mode(net.model):
            for start in range(0, len(seeds), batch_size):
                gens = sample_generators(seeds[start : start + batch_size])
                cond = None if y is None else y[start : start + batch_size].to(device)
                initial = per_sample_randn(gens, (c, s, s), device)
                # the scheduler's start (Heun's is the variance-preserving noise's, sqrt(sigma_max^2 + 1), at every
                # spacing; diffusers' takes sigma_max for linspace and trailing)
                scale = (scheduler.sigmas[0] ** 2 + 1).sqrt() if cfg.kind == "heun" else scheduler.init_noise_sigma
                x = to_side(initial, sides[0], transform) * scale
                for i, t in enumerate(scheduler.timesteps):
                    eta = cfg.eta
                    if sides[i] != x.shape[-1]:
                        eps, x, eta = _grown_step_input(denoiser, noise_levels, x, i, initial, eta, transform, cond)
                    else:
                        eps = denoiser(scheduler.scale_model_input(x, t), t, cond)
                    if cfg.kind in ("dpm++", "unipc", "heun"):  # deterministic; their history lives in the scheduler
                        x = scheduler.step(eps, t, x).prev_sample
                    elif cfg.kind == "ddim":
                        # ddsm draws DDIM's noise at every step when eta > 0 (the last
                        # one included, where sigma is 0), so the streams stay aligned.
                        noise = to_side(per_sample_randn(gens, (c, s, s), device), sides[i], transform) if cfg.eta > 0 else None
                        x = scheduler.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
                    else:
                        # DDPMScheduler takes no noise tensor; given one CPU generator per
                        # sample it draws randn((1, C, H, W)) from each, the values
                        # per_sample_randn draws. It skips the draw at t = 0 (the last
                        # step), after which ddsm draws nothing that is used either.
                        x = scheduler.step(eps, t, x, generator=gens).prev_sample
                out.append(to_images(net.model, x).float().cpu())  # a latent model's: decoded
    finally:
        net.model.to(home)
    if not out:
        return torch.empty((0, c, s, s))
    return torch.cat(out)


def _grown_step_input(denoiser: ScheduledDenoiser, noise: NoiseSchedule, x: torch.Tensor, i: int,
                      initial: torch.Tensor, eta: float, transform: str, cond: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Grow ``x`` before step ``i``: the model's output (in its own prediction type) at the grid timestep, the state
    re-expressed there, DDIM's eta.

    The denoiser sees the grown state at its own (fractional) timestep, as in
    ddsm's loop; diffusers then steps from the grid timestep with the same
    clean-image and noise estimates, and the returned eta makes DDIM's noise
    scale the one of a step from the fractional timestep.
    """
    y, ab_new, t_new = grow_at(noise, denoiser.timesteps[i], x, denoiser.resolutions[i], initial, transform)
    denoiser.model.set_active_width(denoiser.widths[i])
    out = guided_eps(denoiser.model, y, t_new, cond, denoiser.schedule.sampler.guidance_scale, denoiser.uncond[i])
    ab = noise.alpha_bar_at(denoiser.timesteps[i]).to(y.dtype)
    ab_new = ab_new.to(y.dtype)
    eps, x0 = eps_and_x0(out, y, ab_new, noise.prediction_type)
    nxt = denoiser.timesteps[i + 1] if i + 1 < len(denoiser.timesteps) else None
    if eta > 0 and nxt is not None:
        ab_prev = float(noise.alpha_bar_at(nxt))
        grid = (1 - ab_prev) / (1 - float(ab)) * (1 - float(ab) / ab_prev)
        ours = (1 - ab_prev) / (1 - float(ab_new)) * (1 - float(ab_new) / ab_prev)
        eta = eta * (ours / grid) ** 0.5
    # the output diffusers' scheduler expects at the grid timestep: the same (ε, x0) in the model's own terms
    return model_target(eps, x0, ab, noise.prediction_type), ab.sqrt() * x0 + (1 - ab).sqrt() * eps, eta
