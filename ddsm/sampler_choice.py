"""Which sampler a command runs: the one decision of how schedule files, a distilled student and sampler flags combine.

``ddsm sample``, ``ddsm evaluate`` and ``ddsm verdict`` (and any Python
caller) take the sampler from, in this order: the schedule files (they fix
it; a flag may only repeat it), a distilled student (it samples on its own K
teacher timesteps; ``--steps`` other than K and ``--spacing`` are refused),
or the flags themselves (validated, defaults for the rest).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ddsm.config import ModelConfig, validate
from ddsm.distill import student_sampler
from ddsm.errors import DDSMError
from ddsm.samplers.base import SamplerConfig
from ddsm.schedule import Schedule

#: a flag's name on the command line for each SamplerConfig field it sets
FLAG_NAMES = {"kind": "--sampler", "steps": "--steps", "eta": "--eta", "timestep_spacing": "--spacing",
              "guidance_scale": "--guidance-scale", "scheduler": "--scheduler"}


def choose_sampler(model: ModelConfig, schedules: Sequence[Schedule], flags: Mapping[str, Any]) -> SamplerConfig:
    """The sampler for ``model`` given its schedule files and the sampler ``flags`` (SamplerConfig fields, None: unset)."""
    configs = {s.sampler for s in schedules}
    if flags.get("scheduler") is not None and (configs or model.student is not None):
        why = "the schedule files fix the sampler" if configs else "a distilled student samples on its own timesteps"
        raise DDSMError(f"--scheduler {flags['scheduler']!r} cannot be set: {why}; drop it")
    if len(configs) > 1:
        raise DDSMError(f"schedule files use {len(configs)} different sampler settings; evaluate them separately")
    if configs:
        scfg = configs.pop()
        clash = [f"{FLAG_NAMES[k]} {v!r} ({k}={v!r}; schedule: {getattr(scfg, k)!r})" for k, v in flags.items()
                 if v is not None and v != getattr(scfg, k)]
        if clash:
            raise DDSMError(f"flags {', '.join(clash)} disagree with the schedule files' sampler; drop them")
        return scfg
    student = model.student
    if student is not None:  # a distilled student samples on its own K timesteps
        clash = [FLAG_NAMES[k] for k in ("steps", "timestep_spacing") if flags.get(k) is not None
                 and not (k == "steps" and flags[k] == student.steps)]
        if clash:
            raise DDSMError(f"{', '.join(clash)} cannot be set for a distilled {student.steps}-step student; it "
                            f"samples on its own timesteps {list(reversed(student.phi))}")
        return student_sampler(student, kind=flags.get("kind") or "ddim",
                               **{k: flags[k] for k in ("eta", "guidance_scale") if flags.get(k) is not None})
    return validate(SamplerConfig, {k: v for k, v in flags.items() if v is not None}, source="sampler flags")
