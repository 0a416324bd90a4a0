"""The scheduler in a user's diffusers folder, as the ddsm sampler that reproduces it.

A search, an export and a verdict run ddsm's own samplers (they share
prefixes, cache trajectories and fuse candidates), so a search space or
``ddsm verdict --scheduler`` naming a diffusers scheduler config is read
here into the :class:`~ddsm.samplers.SamplerConfig` that steps exactly as
that scheduler does (each pair is tested against diffusers on the same
inputs):

    DDPMScheduler (fixed_small)            ddpm
    DDIMScheduler                          ddim, eta 0 (eta is a call argument in diffusers)
    DPMSolverMultistepScheduler            dpm++   (order 2, dpmsolver++, midpoint)
    UniPCMultistepScheduler                unipc   (order 2, bh2)
    EulerDiscreteScheduler                 ddim, eta 0, no clipping
    EulerAncestralDiscreteScheduler        ddim, eta 1, no clipping
    HeunDiscreteScheduler                  heun    (a width per model call)

The config's ``clip_sample`` is kept, and the timesteps are the
scheduler's own (diffusers' ``set_timesteps`` computes them; where they differ
from ddsm's spacing of the same name, as DPM-Solver++'s ``leading`` or a
``steps_offset`` make them, they become explicit timesteps). Any other
option ddsm does not reproduce (Karras sigmas, thresholding, another solver
order, ...) is refused in one line naming it and the value ddsm takes. The
noise schedule (betas, prediction type) is always the supernet's own: ddsm
read it from the same folder when it slimmed the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ddsm.errors import DDSMError

#: keys every config may hold that are the noise schedule (the supernet's) or diffusers' bookkeeping
NOISE_KEYS = frozenset({"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                        "prediction_type", "timestep_spacing", "steps_offset", "clip_sample", "clip_sample_range",
                        # read only with an option refused below (thresholding, flow or dynamic shifting)
                        "dynamic_thresholding_ratio", "sample_max_value", "flow_shift", "time_shift_type",
                        "lambda_min_clipped"})

_SIGMAS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
_PLAIN = {"thresholding": False, "rescale_betas_zero_snr": False}
_MULTISTEP = {**_SIGMAS, **_PLAIN, "solver_order": 2, "lower_order_final": True, "final_sigmas_type": "zero",
              "use_flow_sigmas": False, "use_dynamic_shifting": False}

#: class name: (ddsm sampler fields, the options ddsm reproduces and their only accepted values, default spacing)
SUPPORTED: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "DDPMScheduler": ({"kind": "ddpm"}, {**_PLAIN, "variance_type": "fixed_small"}, "leading"),
    "DDIMScheduler": ({"kind": "ddim", "eta": 0.0}, {**_PLAIN, "set_alpha_to_one": True}, "leading"),
    "DPMSolverMultistepScheduler": ({"kind": "dpm++"}, {**_MULTISTEP, "algorithm_type": "dpmsolver++",
                                                         "solver_type": "midpoint", "euler_at_final": False,
                                                         "use_lu_lambdas": False, "variance_type": None},
                                    "linspace"),
    "UniPCMultistepScheduler": ({"kind": "unipc"}, {**_MULTISTEP, "predict_x0": True, "solver_type": "bh2",
                                                     "disable_corrector": [], "solver_p": None, "sigma_min": None,
                                                     "sigma_max": None, "shift_terminal": None}, "linspace"),
    "EulerDiscreteScheduler": ({"kind": "ddim", "eta": 0.0, "clip_sample": False},
                               {**_SIGMAS, "rescale_betas_zero_snr": False, "interpolation_type": "linear",
                                "timestep_type": "discrete", "final_sigmas_type": "zero", "sigma_min": None,
                                "sigma_max": None}, "linspace"),
    "EulerAncestralDiscreteScheduler": ({"kind": "ddim", "eta": 1.0, "clip_sample": False},
                                        {"rescale_betas_zero_snr": False}, "linspace"),
    "HeunDiscreteScheduler": ({"kind": "heun"}, dict(_SIGMAS), "linspace"),
}
#: diffusers' own default of clip_sample per class (the classes without one never clip)
CLIPS_BY_DEFAULT = {"DDPMScheduler": True, "DDIMScheduler": True, "HeunDiscreteScheduler": False}


def read_scheduler_config(source: str | Path) -> tuple[dict[str, Any], str]:
    """(the config, where it was read): a folder's ``scheduler/scheduler_config.json`` or ``scheduler_config.json``,
    or that file itself; a one-line DDSMError otherwise (never downloads)."""
    path = Path(source)
    candidates = [path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"] if path.is_dir() \
        else [path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        hint = " (a hub id? ddsm never downloads: give a local folder)" \
            if isinstance(source, str) and source.count("/") == 1 and not path.exists() else ""
        raise DDSMError(f"scheduler {str(source)!r} is not a scheduler_config.json nor a folder holding one (in "
                        f"scheduler/ or at its top){hint}")
    try:
        config = json.loads(found.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DDSMError(f"cannot read the scheduler config {str(found)!r}: {type(e).__name__}") from None
    if not isinstance(config, dict):
        raise DDSMError(f"scheduler config {str(found)!r} is not a JSON object")
    return config, str(found)


def sampler_fields(config: dict[str, Any], source: str, steps: int) -> dict[str, Any]:
    """The :class:`~ddsm.samplers.SamplerConfig` fields (kind, eta, clipping, spacing, explicit timesteps) that step
    as the scheduler ``config`` does for ``steps`` steps, or a one-line DDSMError naming what ddsm cannot reproduce."""
    name = config.get("_class_name")
    if name not in SUPPORTED:
        raise DDSMError(f"scheduler {name!r} of {source} is not supported; supported: "
                        f"{', '.join(n.removesuffix('Scheduler') for n in SUPPORTED)} (each ...Scheduler)")
    fields, reproduced, spacing = SUPPORTED[name]
    for key, value in config.items():
        if key.startswith("_") or key in NOISE_KEYS:
            continue
        if key in reproduced:
            if value != reproduced[key]:
                raise DDSMError(f"{key} {value!r} of {name} in {source} is not reproduced by ddsm's "
                                f"{fields['kind']} sampler; valid: {reproduced[key]!r}")
        elif value not in (None, False):
            raise DDSMError(f"option {key} {value!r} of {name} in {source} is not reproduced by ddsm's "
                            f"{fields['kind']} sampler; remove it or set it to null")
    out = dict(fields)
    clip = bool(config.get("clip_sample", CLIPS_BY_DEFAULT.get(name, False)))
    if "clip_sample" not in out:
        out["clip_sample"] = clip
    if out["clip_sample"] and not math.isclose(float(config.get("clip_sample_range", 1.0)), 1.0):
        raise DDSMError(f"clip_sample_range {config['clip_sample_range']!r} of {source} is not reproduced; ddsm "
                        "clips the clean estimate to [-1, 1] (valid: 1.0)")
    out["timestep_spacing"] = config.get("timestep_spacing", spacing)
    grid = scheduler_grid(config, source, steps)
    n_train = int(config.get("num_train_timesteps", 1000))
    from ddsm.samplers.base import spaced_timesteps

    if grid != spaced_timesteps(n_train, steps, out["timestep_spacing"]).tolist():
        # each scheduler spaces its grid its own way (DPM-Solver++'s 'leading' is not DDIM's, steps_offset moves
        # some): the scheduler's own grid, given explicitly, is what ddsm's sampler then visits
        out["timesteps"] = tuple(grid)
    return out


def scheduler_grid(config: dict[str, Any], source: str, steps: int) -> list[float]:
    """The timesteps ``steps`` steps of the scheduler ``config`` start from (diffusers' own ``set_timesteps``; a
    second-order scheduler's repeats dropped), or a one-line DDSMError when they are not whole training timesteps."""
    from ddsm.integrations.diffusers import import_diffusers

    name = config["_class_name"]
    scheduler = getattr(import_diffusers(), name).from_config(config)
    scheduler.set_timesteps(steps)
    ts = [float(t) for t in scheduler.timesteps]
    if name == "HeunDiscreteScheduler":  # t0, t1, t1, t2, t2, ...: the corrector calls repeat the grid
        ts = ts[:1] + ts[1::2]
    fractional = [t for t in ts if not t.is_integer()]
    if fractional:
        raise DDSMError(f"{name} of {source} visits fractional timesteps ({fractional[0]:g}, ...) with its "
                        f"timestep_spacing {config.get('timestep_spacing')!r} at {steps} steps, which ddsm's sampler "
                        "does not reproduce; use timestep_spacing 'leading' or 'trailing'")
    return ts
