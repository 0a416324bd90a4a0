"""The schedule file: one supernet width (and optionally one resolution) per sampling step.

A schedule is what a search writes and a sampler reads. Widths are listed in
the order the sampler visits its steps (first entry: the noisiest step), so
the same file means the same thing in ddsm's samplers and in a diffusers
loop. ``resolutions``, when present, gives the side of the state at every
step (Spectral Progressive Diffusion): it never decreases and ends at the
image size. ``cached`` marks the steps that reuse the deep features of the last
full step, cut at ``cache_level`` (:mod:`ddsm.samplers.reuse`); a file with
cached steps is schema version 2, so a ddsm that cannot run them refuses it
by its version instead of sampling it without the caching. Loading checks it
against the supernet and reports every mismatch at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from ddsm.config import ModelConfig, _Frozen, validate, width_index
from ddsm.errors import DDSMError
from ddsm.io import read_json, write_json
from ddsm.samplers.base import SECOND_ORDER, SamplerConfig, visited
from ddsm.plan import StepPlan
from ddsm.samplers.progressive import check_resolutions

SCHEDULE_VERSION = 1
#: the version of a file with cached steps (older readers refuse it by its version)
CACHED_SCHEDULE_VERSION = 2
READABLE_VERSIONS = (SCHEDULE_VERSION, CACHED_SCHEDULE_VERSION)

#: a sha256 in hex, as :func:`ddsm.io.weights_sha256` gives it
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def calls_phrase(sampler: SamplerConfig) -> str:
    """How many widths ``sampler`` takes, in words: its steps, or a second-order sampler's calls."""
    if sampler.kind in SECOND_ORDER:
        return (f"{sampler.steps} {sampler.kind} steps, which call the model {sampler.calls} times (twice in every "
                f"step but the last); give one width per call")
    return f"{sampler.steps} sampling steps"


class Schedule(_Frozen):
    """A per-step width schedule for one supernet and one sampler setting."""

    schema_version: Literal[1, 2] = SCHEDULE_VERSION  # 2 exactly when some step is cached
    kind: Literal["ddsm.schedule"] = "ddsm.schedule"
    supernet: str  # fingerprint of the supernet's architecture, width set and noise schedule
    weights: Sha256 | None = None  # sha256 of the weights file its quality and cost were measured on (None: unknown)
    sampler: SamplerConfig  # kind, steps, eta, timestep spacing
    widths: tuple[float, ...]  # one width per denoiser call (per step but for heun), noisiest first
    resolutions: tuple[int, ...] | None = None  # side of the state per step (None: the image size throughout)
    # guided only: the unconditional pass's width per step, null where the step takes no guidance (None: both
    # passes at the step's width at every step)
    uncond_widths: tuple[float | None, ...] | None = None
    cached: tuple[bool, ...] | None = None  # per step: reuse the last full step's deep features (None: no step does)
    cache_level: int | None = Field(None, ge=0)  # where the backbone cuts a cached call (with cached only)
    timesteps: tuple[float, ...] | None = None  # the visited timesteps (checked against the sampler)
    predicted: dict[str, float] = Field(default_factory=dict)  # e.g. flops, latency_s
    quality: dict[str, float] = Field(default_factory=dict)  # measured metrics, e.g. fid
    provenance: dict[str, Any] = Field(default_factory=dict)  # search run, seed, tool version
    measured: dict[str, Any] = Field(default_factory=dict)  # export's timing: batch_size, device, seconds, speedup

    @model_validator(mode="before")
    @classmethod
    def _version_of_cached(cls, data):
        # a schedule built with cached steps is version 2; one that caches nothing is the version-1 file it was
        if isinstance(data, dict) and "schema_version" not in data:
            data = {**data, "schema_version": CACHED_SCHEDULE_VERSION if any(data.get("cached") or ()) else 1}
        return data

    @model_validator(mode="after")
    def _cached_fields(self) -> "Schedule":
        caches = any(self.cached or ())
        if caches != (self.schema_version == CACHED_SCHEDULE_VERSION):
            raise ValueError(f"schema_version {self.schema_version} with {'' if caches else 'no '}cached steps: "
                             f"version {CACHED_SCHEDULE_VERSION} is exactly the file with cached steps")
        if caches and self.cache_level is None:
            raise ValueError("cached steps need a cache_level (where the backbone cuts a cached call)")
        if caches and self.cached[0]:
            raise ValueError("step 0 is cached, but a cached step reuses the features of an earlier full step and step "
                             "0 has none; make the first step full")
        if not caches and (self.cached is not None or self.cache_level is not None):
            raise ValueError("cached and cache_level go together, with at least one cached step; drop both")
        return self

    OMIT_WHEN = {"uncond_widths": None, "cached": None, "cache_level": None}  # before guidance choices, caching

    @classmethod
    def uniform(cls, model: ModelConfig, sampler: SamplerConfig, width: float, **kw: Any) -> "Schedule":
        """Every step at ``width``."""
        return cls.for_model(model, sampler, [width] * sampler.calls, **kw)

    @classmethod
    def for_model(cls, model: ModelConfig, sampler: SamplerConfig, widths: "list[float] | StepPlan",
                  resolutions: list[int] | None = None, **kw: Any) -> "Schedule":
        """A schedule for ``model`` with its visited timesteps filled in (``resolutions`` only if some step is smaller).

        ``widths`` may be a :class:`~ddsm.plan.StepPlan`, which brings its own sides and guidance choices.
        """
        if isinstance(widths, StepPlan):
            kw.setdefault("uncond_widths", widths.uncond)
            if widths.cached is not None:
                kw.setdefault("cached", widths.cached)
                kw.setdefault("cache_level", widths.cache_level)
            widths, resolutions = list(widths.widths), resolutions if resolutions is not None else widths.resolutions
        ts = visited(sampler, model.diffusion.num_timesteps)
        if resolutions is not None and all(r == model.geometry.image_size for r in resolutions):
            resolutions = None
        s = cls(supernet=model.fingerprint(), sampler=sampler, widths=tuple(widths), timesteps=tuple(ts.tolist()),
                resolutions=None if resolutions is None else tuple(int(r) for r in resolutions), **kw)
        s.check(model)
        return s

    def plan(self) -> StepPlan:
        """The in-memory form samplers, evaluators and the diffusers bridge take: width and side per step."""
        return StepPlan(self.widths, self.resolutions, self.uncond_widths, self.cached, self.cache_level)

    def mismatches(self, model: ModelConfig) -> list[str]:
        """Every way this schedule does not fit ``model`` (empty when it fits)."""
        out = []
        if self.supernet != model.fingerprint():
            out.append(f"made for supernet {self.supernet}, not {model.fingerprint()}")
        bad = sorted({w for w in self.widths if width_index(w, model.geometry.widths) is None})
        if bad:
            out.append(f"widths {bad} are not served (valid: {list(model.geometry.widths)})")
        if len(self.widths) != self.sampler.calls:
            out.append(f"{len(self.widths)} widths for {calls_phrase(self.sampler)}")
        if self.uncond_widths is not None:
            bad = sorted({u for u in self.uncond_widths if u is not None and width_index(u, model.geometry.widths) is None})
            if bad:
                out.append(f"uncond_widths {bad} are not served (valid: {list(model.geometry.widths)} or null)")
            if len(self.uncond_widths) != self.sampler.calls:
                out.append(f"{len(self.uncond_widths)} uncond_widths for {calls_phrase(self.sampler)}")
            if self.sampler.guidance_scale in (None, 1.0):
                out.append(f"it chooses the unconditional pass per step (uncond_widths) but its guidance scale is "
                           f"{self.sampler.guidance_scale!r}, which guides nothing")
        if self.cached is not None:
            if len(self.cached) != self.sampler.calls:
                out.append(f"{len(self.cached)} cached flags for {calls_phrase(self.sampler)}")
            if self.uncond_widths is not None:
                out.append("it both caches steps and chooses the unconditional pass per step, which cannot run together")
            if self.resolutions is not None:
                out.append("it both caches steps and changes resolution, which cannot run together")
        if self.resolutions is not None:
            try:
                check_resolutions(self.resolutions, model.geometry, self.sampler.calls)
            except DDSMError as e:
                out.append(str(e))
        if self.sampler.guidance_scale is not None and not model.geometry.num_classes:
            out.append(f"it guides (guidance scale {self.sampler.guidance_scale:g}) but this supernet is "
                       "unconditional")
        elif self.uncond_widths is not None and not model.geometry.num_classes:
            out.append("it chooses the unconditional pass per step (uncond_widths) but this supernet is unconditional")
        if self.sampler.steps > model.diffusion.num_timesteps:
            out.append(f"{self.sampler.steps} steps exceed the {model.diffusion.num_timesteps} training timesteps")
        elif self.timesteps is not None:
            ts = visited(self.sampler, model.diffusion.num_timesteps)
            if list(self.timesteps) != ts.tolist():
                out.append("its timesteps differ from the sampler's spacing "
                           f"({self.sampler.timestep_spacing}, {self.sampler.steps} steps)")
        return out

    def check(self, model: ModelConfig, where: str = "schedule") -> None:
        """Raise one DDSMError listing every mismatch with ``model``."""
        problems = self.mismatches(model)
        if problems:
            raise DDSMError(f"{where} does not fit this supernet: " + "; ".join(problems))

    def check_weights(self, net: Any, *, allow_new: bool = False, where: str = "schedule") -> dict[str, str]:
        """Refuse ``net`` (a loaded :class:`~ddsm.checkpoint.Supernet`) if its weights are not the ones this
        schedule was measured on; the architecture alone does not say a schedule still holds.

        With ``allow_new`` the schedule is used anyway and the override is returned, for the caller to record
        beside its outputs (empty when the weights match or the schedule records none).
        """
        if self.weights is None or self.weights == net.weights_sha256:
            return {}
        if allow_new:
            return {"schedule_weights": self.weights, "checkpoint_weights": net.weights_sha256}
        raise DDSMError(f"{where} was measured on other weights (sha256 {self.weights[:12]}...) than checkpoint "
                        f"{net.source!r} holds ({net.weights_sha256[:12]}...); give the checkpoint it was made with, "
                        "or --allow-new-weights to use it anyway (recorded in the outputs)")

    def save(self, path: str | Path) -> None:
        """Write the schedule as JSON, atomically."""
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path, model: ModelConfig | None = None) -> "Schedule":
        """Read a schedule file; with ``model``, check it fits that supernet."""
        path = Path(path)
        data = read_json(path, "schedule file")
        if isinstance(data, dict) and data.get("schema_version") not in (None, *READABLE_VERSIONS):
            raise DDSMError(f"schedule file {str(path)!r} has schema_version {data.get('schema_version')!r}; "
                            f"this ddsm reads {' and '.join(map(str, READABLE_VERSIONS))}")
        sched = validate(cls, data, source=f"schedule file {path}")
        if model is not None:
            sched.check(model, where=f"schedule file {str(path)!r}")
        return sched

    @classmethod
    def load_for(cls, path: str | Path, net: Any, *, allow_new_weights: bool = False) -> "tuple[Schedule, dict]":
        """Read a schedule file for a loaded supernet: it must fit its architecture and, unless
        ``allow_new_weights``, have been measured on its weights. Returns the schedule and the override to record
        (see :meth:`check_weights`)."""
        sched = cls.load(path, net.config)
        override = sched.check_weights(net, allow_new=allow_new_weights, where=f"schedule file {str(path)!r}")
        return sched, override
