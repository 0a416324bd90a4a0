"""Sample a ddsm supernet with any supported diffusers scheduler, one width per model call.

ddsm's own DDPM/DDIM samplers stay the reference (they reproduce the search's
samples exactly); this module lets a user run the same supernet with the
scheduler they already sample with: DPM-Solver++, UniPC, Euler, Heun, ... A
width schedule here is a width per *model call*, not per step: a
second-order scheduler (Heun) calls the model twice in most steps and gets a
width for each call. diffusers' loop calls the model once per entry of
``scheduler.timesteps`` (a second-order scheduler repeats the timesteps it
corrects at), so the number of calls is ``len(scheduler.timesteps)``, which
:func:`model_calls` returns before any sampling.

    scheduler = make_scheduler(net, "dpm++", steps=10)
    widths = [0.5] * 4 + [1.0] * (model_calls(scheduler) - 4)
    images = sample_with_scheduler(net, scheduler, widths, seeds=range(16))

Seeding is ddsm's: sample i draws its initial noise (and a stochastic
scheduler's noise, through diffusers' per-sample generator list) from its own
CPU generator seeded with ``seeds[i]``, so an image depends on its seed only.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Sequence

import torch

from ddsm.checkpoint import Supernet
from ddsm.diffusion.noise import make_betas
from ddsm.errors import DDSMError
from ddsm.integrations.diffusers import import_diffusers, make_diffusers_scheduler, model_config_of
from ddsm.integrations.scheduler_config import read_scheduler_config
from ddsm.nn.backbone import to_images
from ddsm.samplers.base import SamplerConfig
from ddsm.samplers.loop import (check_guidance, eval_mode, guided_eps, per_sample_randn, per_step_widths,
                                sample_generators)

__all__ = ["SCHEDULERS", "make_scheduler", "model_calls", "sample_with_scheduler", "scheduler_class"]

#: short names of the supported diffusers schedulers (their class names are accepted too)
SCHEDULERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
}


#: scheduler options fixed by the supernet's noise schedule
NOISE = frozenset({"num_train_timesteps", "trained_betas", "beta_start", "beta_end", "beta_schedule", "prediction_type"})


def folder_scheduler(name: str) -> tuple[str, dict[str, Any]] | None:
    """(class name, options) of the scheduler config at ``name`` when it is a local folder or JSON file (the user's
    own scheduler: its options but the noise schedule, which is the supernet's), else None."""
    if name in SCHEDULERS or name in SCHEDULERS.values() or not Path(name).exists():  # a name wins over a folder
        return None
    config, where = read_scheduler_config(name)
    cls_name = config.get("_class_name")
    if cls_name not in SCHEDULERS.values():
        raise DDSMError(f"scheduler {cls_name!r} of {where} is not supported; choose one of "
                        f"{', '.join(SCHEDULERS.values())}")
    return cls_name, {k: v for k, v in config.items() if not k.startswith("_") and k not in NOISE}


def scheduler_class(name: str) -> Any:
    """The diffusers scheduler class for a short name (``dpm++``), a class name or a folder holding a scheduler
    config, or a one-line DDSMError."""
    return _resolve(name)[0]


def _resolve(name: str) -> tuple[Any, dict[str, Any]]:
    # (the class, a folder's own options: empty for a name), the folder's config read once
    own = folder_scheduler(name)
    cls_name = own[0] if own is not None else SCHEDULERS.get(name, name)
    if cls_name not in SCHEDULERS.values():
        raise DDSMError(f"scheduler {name!r} is not supported; choose one of "
                        f"{', '.join(f'{k} ({v})' for k, v in SCHEDULERS.items())}")
    return getattr(import_diffusers(), cls_name), own[1] if own is not None else {}


def make_scheduler(net_or_config: Any, name: str, steps: int, **options: Any) -> Any:
    """A diffusers scheduler for the supernet's noise schedule, with its ``steps`` timesteps set.

    The betas and the prediction type are the supernet's (``trained_betas``:
    ddsm's float64 betas), so the scheduler converts the model's output as
    ddsm does; everything else is diffusers' default for that scheduler unless
    given in ``options`` (timestep spacing: ddsm's ``leading`` with no offset, as its own samplers; any argument of the scheduler's constructor, e.g.
    ``solver_order=2``, ``use_karras_sigmas=True``, ``timestep_spacing="trailing"``).
    ``ddim`` and ``ddpm`` without options are ddsm's own walk exactly
    (:func:`ddsm.integrations.diffusers.make_diffusers_scheduler`, leading spacing).
    """
    cls, own = _resolve(name)
    if own:  # the user's scheduler: its own options, then the caller's
        valid = set(inspect.signature(cls.__init__).parameters)
        options = {**{k: v for k, v in own.items() if k in valid}, **options}
    config = model_config_of(net_or_config)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 < steps <= config.diffusion.num_timesteps:
        raise DDSMError(f"steps {steps!r} is not in 1..{config.diffusion.num_timesteps} (the training timesteps)")
    if cls.__name__ in ("DDIMScheduler", "DDPMScheduler") and not options:
        kind = "ddim" if cls.__name__ == "DDIMScheduler" else "ddpm"
        return make_diffusers_scheduler(config, SamplerConfig(kind=kind, steps=steps))
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    fixed = NOISE
    for key in options:
        if key in fixed:
            raise DDSMError(f"scheduler option {key!r} is fixed by the supernet's noise schedule; drop it")
        if key not in valid:
            raise DDSMError(f"{cls.__name__} has no option {key!r}; its options are "
                            f"{', '.join(sorted(set(valid) - fixed))}")
    diff = config.diffusion
    if "timestep_spacing" in valid:
        # ddsm's walk: the first step at T - T/steps, not T - 1, where a cosine schedule's alpha_bar is ~0 and a
        # solver's x0 = (x - sqrt(1 - alpha_bar) out) / sqrt(alpha_bar) amplifies any error of the model
        options = {"timestep_spacing": "leading", "steps_offset": 0, **options}
    scheduler = cls(num_train_timesteps=diff.num_timesteps, trained_betas=make_betas(diff).tolist(),
                    prediction_type=diff.prediction_type, **options)
    scheduler.set_timesteps(steps)
    return scheduler


def model_calls(scheduler: Any) -> int:
    """How many times diffusers' loop calls the model with this scheduler (its timesteps set): one per entry of
    ``scheduler.timesteps`` (a second-order scheduler lists the timesteps it corrects at twice)."""
    if getattr(scheduler, "timesteps", None) is None or (getattr(scheduler, "num_inference_steps", None) is None
                                                          and not getattr(scheduler, "custom_timesteps", False)):
        raise DDSMError(f"{type(scheduler).__name__} has no timesteps yet; call set_timesteps(steps) first")
    return len(scheduler.timesteps)


def _fresh(scheduler: Any) -> Any:
    # a scheduler holds per-run state (multistep history, Heun's first-order half step, step index), so every
    # batch starts from a copy with the same config and timesteps, and the caller's object is never advanced
    clone = type(scheduler).from_config(scheduler.config)
    if getattr(scheduler, "custom_timesteps", False):  # DDPM on ddsm's explicit grid
        clone.set_timesteps(timesteps=[int(t) for t in scheduler.timesteps])
    else:
        clone.set_timesteps(scheduler.num_inference_steps)
    if hasattr(scheduler, "alphas_cumprod"):
        clone.alphas_cumprod = scheduler.alphas_cumprod.clone()
    return clone


@torch.no_grad()
def sample_with_scheduler(
    net: Supernet,
    scheduler: Any,
    widths: float | Sequence[float],
    seeds: Sequence[int],
    *,
    labels: Sequence[int] | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Sample one image per seed with a diffusers ``scheduler``; model call k runs at ``widths[k]``.

    ``widths``: one width for every call, or one per model call (:func:`model_calls`); a list of another length is
    refused with the count it needs. A class-conditional model samples seed i with ``labels[i]`` (None: class i mod
    num_classes), guided by ``guidance_scale`` (both passes at the call's width, one batched call). Returns
    (N, C, H, W) float32 on the CPU; the scheduler passed in is not advanced (each batch steps a copy of it).
    """
    if not isinstance(net, Supernet):
        raise DDSMError(f"sample_with_scheduler needs a ddsm Supernet (from load_supernet), got {type(net).__name__}")
    if batch_size <= 0:
        raise DDSMError(f"batch_size must be positive, got {batch_size}")
    calls = model_calls(scheduler)
    if not isinstance(widths, (int, float)) and len(widths) != calls:
        raise DDSMError(f"{len(widths)} widths for {calls} model calls of {type(scheduler).__name__} with "
                        f"{scheduler.num_inference_steps or len(scheduler.timesteps)} steps; give one width per model call (a second-order "
                        "scheduler calls the model twice in most steps)")
    per_call = per_step_widths(widths, calls, net.model)
    model = net.model
    y, scale = check_guidance(model, labels, guidance_scale, seeds)
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    c, s = net.config.geometry.in_channels, net.config.geometry.image_size
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    out = []
    try:
        model.to(device)
        with eval_mode(model):
            for start in range(0, len(seeds), batch_size):
                run = _fresh(scheduler)
                gens = sample_generators(seeds[start: start + batch_size])
                cond = None if y is None else y[start: start + batch_size].to(device)
                x = per_sample_randn(gens, (c, s, s), device) * run.init_noise_sigma
                kwargs = {"generator": gens} if takes_generator else {}  # a stochastic scheduler's per-sample noise
                for k, t in enumerate(run.timesteps):
                    model.set_active_width(per_call[k])
                    # the model sees the VP state at its (possibly fractional) training timestep
                    output = guided_eps(model, run.scale_model_input(x, t), float(t), cond, scale)
                    x = run.step(output, t, x, **kwargs).prev_sample
                out.append(to_images(model, x).float().cpu())  # a latent model's: decoded
    finally:
        model.to(home)
    if not out:
        g = net.config.image_geometry
        return torch.empty((0, g.in_channels, g.image_size, g.image_size))
    return torch.cat(out)
