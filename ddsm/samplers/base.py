"""The sampler contract shared by DDPM and DDIM (diffusers-style).

``set_timesteps(n)`` fixes the n timesteps the sampler visits (descending, on
the training grid; fractional values are allowed), then ``step(output, t, x)``
moves the state from ``t`` to the next visited timestep, reading the model's
output as its noise schedule's ``prediction_type`` says (ε, v or x0, as
diffusers' ``prediction_type``; :mod:`ddsm.diffusion.prediction`). Samplers
know nothing about network width: the sampling loop looks the width up per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pydantic import Field, model_validator

from ddsm.config import MAX_TIMESTEPS, _Frozen
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.diffusion.prediction import eps_and_x0
from ddsm.errors import DDSMError

Spacing = Literal["leading", "trailing", "linspace"]
Kind = Literal["ddpm", "ddim", "dpm++", "unipc", "heun"]
#: every sampler kind (the CLI's choices)
SAMPLER_KINDS: tuple[str, ...] = get_args(Kind)


class SamplerConfig(_Frozen):
    """Which sampler, and how it walks the timesteps."""

    # ancestral DDPM, DDIM, DPM-Solver++(2M) (ddsm.samplers.dpm), UniPC-bh2 (ddsm.samplers.unipc) or Heun's
    # second-order method (ddsm.samplers.heun: two denoiser calls per step but the last)
    kind: Kind = "ddim"
    # sampling steps, diffusers' num_inference_steps (at most the training timesteps); a schedule holds one width
    # per denoiser *call*: ``calls`` (2 steps - 1 for heun, else steps)
    steps: int = Field(50, gt=0, le=MAX_TIMESTEPS)
    # DDIM stochasticity in [0, 1]: 0 is deterministic, 1 gives DDPM's posterior variance; larger values would
    # add more noise than the step removes (the direction term clamps to 0), so they are refused. Ignored by DDPM.
    eta: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    timestep_spacing: Spacing = "leading"  # how visited timesteps are spread, as in diffusers
    # clip the predicted x0 to [-1, 1] (DDPM and DDIM; DPM-Solver++ never clips, nor does any sampler of latents)
    clip_sample: bool = True
    # explicit visited timesteps, descending (a distilled student's phi); None: spaced per timestep_spacing
    timesteps: tuple[float, ...] | None = None
    # classifier-free guidance of a class-conditional model: eps_u + s (eps_c - eps_u); None: the conditional
    # prediction alone (as s = 1), one pass. Labels: the sample with seed i has class i mod num_classes.
    guidance_scale: float | None = Field(None, ge=0.0, le=100.0)

    @property
    def calls(self) -> int:
        """Denoiser calls per sample (before guidance): the length of a width schedule for this sampler."""
        return calls_for(self.kind, self.steps)

    OMIT_WHEN = {"guidance_scale": None}  # every schedule file, search space and fingerprint made before it

    @model_validator(mode="before")
    @classmethod
    def _from_scheduler(cls, data: Any) -> Any:
        # ``scheduler: FOLDER_OR_JSON``: the sampler that reproduces the user's diffusers scheduler
        # (ddsm.integrations.scheduler_config); only steps and guidance_scale may be given beside it
        if not isinstance(data, dict) or "scheduler" not in data:
            return data
        from ddsm.integrations.scheduler_config import read_scheduler_config, sampler_fields

        data = dict(data)
        source = data.pop("scheduler")
        clash = sorted(set(data) - {"steps", "guidance_scale"})
        if clash:
            raise ValueError(f"give the sampler as a scheduler or by its fields, not both (drop {', '.join(clash)}; "
                             "steps and guidance_scale may stand beside scheduler)")
        if not isinstance(source, (str, Path)):
            raise ValueError(f"scheduler {source!r} is not a path; give a diffusers folder or scheduler_config.json")
        steps = data.get("steps", 50)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            return data  # the field's own check names the bad step count
        config, where = read_scheduler_config(source)
        return {**sampler_fields(config, where, steps), **data}

    @model_validator(mode="after")
    def _timesteps(self) -> "SamplerConfig":
        ts = self.timesteps
        if ts is not None:
            if len(ts) != self.steps:
                raise ValueError(f"{len(ts)} explicit timesteps for {self.steps} steps; give one per step")
            if any(b >= a for a, b in zip(ts, ts[1:])) or ts[-1] < 0:
                raise ValueError(f"explicit timesteps must be >= 0 and strictly descending, got {list(ts)[:8]}")
        return self


#: samplers that call the denoiser twice in every step but the last (their timesteps repeat, as diffusers' Heun's)
SECOND_ORDER = frozenset({"heun"})


def calls_for(kind: str, steps: int) -> int:
    """Denoiser calls of ``steps`` sampling steps of sampler ``kind``: 2 steps - 1 for a second-order one."""
    return 2 * steps - 1 if kind in SECOND_ORDER else steps


def guided_passes(config: SamplerConfig) -> int:
    """Denoiser passes per sampling step: 2 under classifier-free guidance (conditional and unconditional), else 1."""
    return 2 if config.guidance_scale not in (None, 1.0) else 1


@dataclass(frozen=True)
class SamplerOutput:
    """Result of one sampler step."""

    prev_sample: torch.Tensor  # the state at the next visited timestep
    pred_original_sample: torch.Tensor  # the x0 predicted at this step


def spaced_timesteps(num_train: int, n: int, spacing: Spacing) -> torch.Tensor:
    """Descending visited timesteps with the same conventions as diffusers' schedulers."""
    if not 0 < n <= num_train:
        raise DDSMError(f"steps {n} is not in 1..{num_train} (the number of training timesteps)")
    if spacing == "leading":
        ratio = num_train // n
        ts = (torch.arange(n, dtype=torch.float64) * ratio).round().flip(0)
    elif spacing == "trailing":
        ratio = num_train / n
        # A float step can make arange yield n + 1 values (the extra one -1); keep the first n.
        ts = (torch.arange(num_train, 0, -ratio, dtype=torch.float64)[:n]).round() - 1
    elif spacing == "linspace":
        ts = torch.linspace(0, num_train - 1, n, dtype=torch.float64).round().flip(0)
    else:
        raise DDSMError(f"timestep_spacing {spacing!r} is not one of leading, trailing, linspace")
    return ts


def step_grid(config: SamplerConfig, num_train: int) -> torch.Tensor:
    """The distinct timesteps the steps of ``config`` start from: its explicit ones (a student's phi), else the
    spacing's grid."""
    if config.timesteps is not None:
        return torch.tensor(config.timesteps, dtype=torch.float64)
    return spaced_timesteps(num_train, config.steps, config.timestep_spacing)


def calls_of(kind: str, grid: torch.Tensor) -> torch.Tensor:
    """The timestep of every denoiser call on a step ``grid``: the grid itself, or for a second-order sampler
    every timestep after the first twice (the step's corrector call ends there, the next step starts there)."""
    return torch.cat([grid[:1], grid[1:].repeat_interleave(2)]) if kind in SECOND_ORDER else grid


def visited(config: SamplerConfig, num_train: int) -> torch.Tensor:
    """The timestep of every denoiser call of a sampler with ``config`` (``config.calls`` of them, descending; a
    second-order sampler's repeat, see :func:`calls_of`)."""
    return calls_of(config.kind, step_grid(config, num_train))


class Sampler:
    """Base class: holds the visited timesteps and the noise schedule."""

    #: whether ``step`` consumes fresh noise (the loop then draws it per sample)
    stochastic: bool = False
    #: whether the state carries the sampler's history after the image channels (a multistep solver): loops start
    #: from :meth:`initial_state`, call the denoiser on :meth:`model_input` and return :meth:`final`
    history: bool = False

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """The state a trajectory starts from, given its initial noise image."""
        return x

    def model_input(self, state: torch.Tensor) -> torch.Tensor:
        """The image the denoiser sees in ``state``."""
        return state

    def final(self, state: torch.Tensor) -> torch.Tensor:
        """The sample a finished trajectory's state holds."""
        return state

    def __init__(self, schedule: NoiseSchedule, config: SamplerConfig) -> None:
        self.schedule = schedule
        self.config = config
        self.timesteps: torch.Tensor | None = None  # one per denoiser call
        self.step_timesteps: torch.Tensor | None = None  # one per step (the same but for a second-order sampler)
        self._index: dict[float, int] = {}

    @property
    def num_inference_steps(self) -> int | None:
        return None if self.step_timesteps is None else len(self.step_timesteps)

    def set_timesteps(self, num_inference_steps: int | None = None, timesteps: list[float] | None = None) -> None:
        """Fix the visited timesteps: ``num_inference_steps`` spaced per the config, or an explicit descending list."""
        if timesteps is not None:
            ts = torch.as_tensor(timesteps, dtype=torch.float64)
            if ts.ndim != 1 or len(ts) == 0 or (ts[1:] >= ts[:-1]).any():
                raise DDSMError(f"timesteps must be a non-empty strictly descending list, got {list(timesteps)}")
            if ts[0] > self.schedule.num_timesteps - 1 or ts[-1] < 0:
                raise DDSMError(f"timesteps must lie in [0, {self.schedule.num_timesteps - 1}], got {list(timesteps)}")
        elif self.config.timesteps is not None and num_inference_steps in (None, self.config.steps):
            return self.set_timesteps(timesteps=list(self.config.timesteps))
        else:
            n = num_inference_steps if num_inference_steps is not None else self.config.steps
            ts = spaced_timesteps(self.schedule.num_timesteps, n, self.config.timestep_spacing)
        self.step_timesteps = ts
        self.timesteps = calls_of(self.config.kind, ts)
        self._index = {float(t): i for i, t in enumerate(ts)}

    def enter_at(self, timestep: float, index: int) -> None:
        """Let step ``index`` start from ``timestep`` instead of its visited one (after a resolution change).

        The step still ends at the timestep visited after ``index``, so ``step``
        accepts a state at any noise level between the two.
        """
        if self.step_timesteps is None:
            raise ValueError("call set_timesteps() before enter_at()")
        t = float(timestep)
        if not 0 <= index < len(self.step_timesteps):
            raise DDSMError(f"step index {index} is not in 0..{len(self.step_timesteps) - 1}")
        nxt = float(self.step_timesteps[index + 1]) if index + 1 < len(self.step_timesteps) else -1.0
        if not nxt < t <= self.schedule.num_timesteps - 1:
            raise DDSMError(f"step {index} cannot start at timestep {t:g}: it must lie in ({nxt:g}, "
                            f"{self.schedule.num_timesteps - 1}]")
        if self._index.setdefault(t, index) != index:
            raise DDSMError(f"timestep {t:g} already starts step {self._index[t]}, not {index}")

    def prev_timestep(self, t: float) -> float:
        """The timestep visited after ``t`` (-1 after the last: the clean image, alpha_bar = 1)."""
        if self.step_timesteps is None:
            raise ValueError(
                f"{type(self).__name__}.step() called before set_timesteps(); call set_timesteps(num_inference_steps) first"
            )
        i = self._index.get(float(t))
        if i is None:
            raise DDSMError(f"timestep {float(t)} is not among the visited timesteps {self.step_timesteps.tolist()}")
        return float(self.step_timesteps[i + 1]) if i + 1 < len(self.step_timesteps) else -1.0

    def _alpha_bars(self, t: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor, float]:
        prev = self.prev_timestep(t)
        ab_t = self.schedule.alpha_bar_at(t)
        ab_prev = self.schedule.alpha_bar_at(prev) if prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        return ab_t.to(device, dtype), ab_prev.to(device, dtype), prev

    def _eps_x0(self, model_output: torch.Tensor, x: torch.Tensor, ab_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (ε, x0) from the output, per the model's prediction type; clipping x0 leaves ε as is, as in diffusers
        eps, x0 = eps_and_x0(model_output, x, ab_t, self.schedule.prediction_type)
        return eps, x0.clamp(-1, 1) if self.config.clip_sample and self.schedule.clips else x0

    def step(self, model_output: torch.Tensor, timestep: float, sample: torch.Tensor,
             noise: torch.Tensor | None = None) -> SamplerOutput:  # pragma: no cover - interface
        raise NotImplementedError


class HistoryInState(Sampler):
    """A sampler whose state is the image followed by ``parts - 1`` tensors of its history along the channels
    (multistep and second-order solvers): every loop, prefix, cache and fused call carries the history with it."""

    history = True
    parts: int = 2  # the image and its history tensors, each with the image's channels

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """The image with an empty history."""
        return torch.cat([x] + [torch.zeros_like(x)] * (self.parts - 1), dim=1)

    def model_input(self, state: torch.Tensor) -> torch.Tensor:
        """The image part of the state: what the denoiser sees."""
        return state[:, : state.shape[1] // self.parts]

    def final(self, state: torch.Tensor) -> torch.Tensor:
        return self.model_input(state)
