"""A slimmed diffusers model inside diffusers' own pipelines, at a width per sampling step.

``SlimPipelineUNet`` stands where a pipeline expects its ``UNet2DModel``
(``DDPMPipeline(unet=..., scheduler=...)``, ``DDIMPipeline``, ``LDMPipeline``)
or its ``DiTTransformer2DModel`` (``DiTPipeline``): it carries the
original ``config`` (the pipeline reads ``sample_size`` and ``in_channels``
from it), and ``unet(sample, t).sample`` runs the slimmable mirror
(``ddsm.nn.diffusers_unet``, ``ddsm.nn.diffusers_dit``) at the width its schedule gives the timestep
``t``. A latent pipeline decodes with the user's autoencoder, the one the
supernet carries. The schedule maps each timestep the pipeline will visit to a width;
``widths_for_pipeline`` builds it from one width per step, noisiest first,
with the scheduler's own ``set_timesteps``, so it matches the pipeline's loop
exactly. At full width the pipeline gives the original pipeline's images on
the same generator (to float tolerance; tested).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ddsm.checkpoint import load_supernet
from ddsm.errors import DDSMError
from ddsm.integrations.diffusers import import_diffusers, make_diffusers_scheduler
from ddsm.schedule import Schedule

__all__ = ["SlimPipelineUNet", "pipeline_for_schedule", "widths_for_pipeline"]

DIT_PIPELINE_NULL = 1000  # the unconditional label DiTPipeline passes when guiding (ImageNet's class count)


def widths_for_pipeline(scheduler: Any, num_inference_steps: int, widths: Sequence[float]
                        ) -> dict[int, float | tuple[float, ...]]:
    """``{timestep: width}`` for the calls a pipeline with ``scheduler`` makes, from one width per model call
    (per step, but for a second-order scheduler such as Heun, which calls the model twice at most timesteps: those
    map to the widths of their calls, in order)."""
    import copy

    probe = copy.deepcopy(scheduler)  # set_timesteps mutates the scheduler; the pipeline calls it again
    probe.set_timesteps(num_inference_steps)
    calls = [int(t) for t in probe.timesteps.tolist()]
    if len(widths) != len(calls):
        what = "step" if len(calls) == num_inference_steps else f"model call ({len(calls)} calls)"
        raise DDSMError(f"{len(widths)} widths for {num_inference_steps} inference steps; give one width per {what}")
    out: dict[int, list[float]] = {}
    for t, w in zip(calls, widths):
        out.setdefault(t, []).append(float(w))
    return {t: ws[0] if len(ws) == 1 else tuple(ws) for t, ws in out.items()}


class SlimPipelineUNet(torch.nn.Module):
    """A ``UNet2DModel`` stand-in for diffusers pipelines: the slimmable mirror at a width per timestep."""

    def __init__(self, net: torch.nn.Module, config: Mapping[str, Any], widths: Mapping[int, float] | float = 1.0
                 ) -> None:
        super().__init__()

        import_diffusers()
        from diffusers.configuration_utils import FrozenDict

        self.net = net  # a backbone (SlimmedUNet) or the bare mirror (SlimUNet2DModel): forward(x, t, cond=...)
        self.config = FrozenDict(dict(config))  # what pipelines read: sample_size, in_channels
        self.widths = widths
        self.visited: list[tuple[int, float]] = []  # (timestep, width) of every call, in order
        self._seen: dict[int, int] = {}  # calls made at each timestep of a repeated one since the run began

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def width_at(self, t: int) -> float:
        """The width the schedule gives timestep ``t``."""
        if isinstance(self.widths, (int, float)):
            return float(self.widths)
        if t not in self.widths:
            raise DDSMError(f"timestep {t} is not in this schedule (it covers {sorted(self.widths)[:4]}...); build it "
                            "with widths_for_pipeline for the pipeline's scheduler and num_inference_steps")
        if t == max(self.widths):  # the noisiest call starts a sampling run
            self._seen.clear()
        w = self.widths[t]
        if isinstance(w, tuple):  # a timestep called more than once (Heun): its calls' widths, in order
            k = self._seen.get(t, 0)
            self._seen[t] = k + 1
            w = w[k % len(w)]
        return float(w)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, class_labels: torch.Tensor | None = None,
                return_dict: bool = True, **_):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        t = int(torch.as_tensor(timestep).reshape(-1)[0])
        w = self.width_at(t)
        self.net.set_active_width(w)
        self.visited.append((t, w))
        n = getattr(self.net, "num_classes", 0)
        if class_labels is not None and "num_embeds_ada_norm" in self.config and n != DIT_PIPELINE_NULL:
            # DiTPipeline's null label is ImageNet's 1000, hard-coded: read as this DiT's own null label (n)
            class_labels = torch.where(torch.as_tensor(class_labels) == DIT_PIPELINE_NULL, n, class_labels)
        eps = self.net(sample, torch.as_tensor(timestep, device=sample.device), cond=class_labels)
        channels = int(self.config.get("out_channels") or self.config.get("in_channels", 3))
        if channels > eps.shape[1]:  # a DiT that learns its variance: DiTPipeline splits those channels off unread
            eps = torch.cat([eps, eps.new_zeros((eps.shape[0], channels - eps.shape[1], *eps.shape[2:]))], dim=1)
        return UNet2DOutput(sample=eps) if return_dict else (eps,)


def pipeline_for_schedule(checkpoint: str, schedule: Any, *, device: str | torch.device = "cpu",
                          allow_new_weights: bool = False) -> Any:
    """diffusers' own pipeline running a slimmed supernet at a schedule's widths: ``DDIMPipeline`` /
    ``DDPMPipeline`` for a pixel-space UNet, ``LDMPipeline`` for a UNet with a ``VQModel``, ``DiTPipeline``
    for a DiT with an ``AutoencoderKL`` (both decode with the autoencoder the supernet carries).

    ``checkpoint`` is a ``ddsm slim`` run (or its supernet file) and
    ``schedule`` an exported schedule file or :class:`~ddsm.schedule.Schedule`
    of that supernet. The pipeline's scheduler steps exactly like ddsm's
    sampler (``make_diffusers_scheduler``); pass ``eta=schedule.sampler.eta``
    to a DDIM pipeline's call. ``pipeline.unet.visited`` lists the
    (timestep, width) of every call. A schedule measured on other weights than
    the checkpoint's is refused unless ``allow_new_weights``.
    """

    diffusers = import_diffusers()
    net = load_supernet(checkpoint, device=device)
    if net.config.diffusers is None:
        raise DDSMError(f"{checkpoint!r} is not a slimmed diffusers model (ddsm slim); for a supernet ddsm trained "
                        "itself use ddsm.integrations.diffusers.sample_with_diffusers")
    d = net.config.diffusers
    if d.transformer is not None and d.autoencoder is None:
        raise DDSMError(f"{checkpoint!r} is a slimmed pixel-space DiT; DiTPipeline needs its VAE (a pixel DiT samples "
                        "with ddsm.integrations.diffusers.sample_with_diffusers or ddsm sample --scheduler)")
    sched = schedule if isinstance(schedule, Schedule) else Schedule.load(schedule, net.config)
    sched.check(net.config)
    sched.check_weights(net, allow_new=allow_new_weights)
    if sched.resolutions is not None:
        raise DDSMError("a schedule with lower resolutions cannot run in a diffusers pipeline; give a width schedule")
    if sched.cached is not None or sched.uncond_widths is not None:
        raise DDSMError("a schedule with cached steps or per-step guidance choices cannot run in this pipeline (a "
                        "slimmed diffusers model offers no cache level); give a width schedule")
    scheduler = make_diffusers_scheduler(net, sched.sampler)
    widths = widths_for_pipeline(scheduler, sched.sampler.steps, sched.widths)
    theirs = sorted(widths, reverse=True)
    ours = sorted({int(round(t)) for t in (sched.timesteps or ())}, reverse=True)
    if ours and theirs != ours:
        raise DDSMError(f"diffusers' {sched.sampler.kind} pipeline would visit timesteps {theirs[:4]}..., the schedule "
                        f"{ours[:4]}...; search with timestep_spacing 'leading' to run the schedule in a pipeline")
    stand_in = SlimPipelineUNet(net.model, d.unet or d.transformer, widths).to(device)
    if d.transformer is not None:
        return diffusers.DiTPipeline(transformer=stand_in, vae=net.model.codec.model, scheduler=scheduler)
    if d.autoencoder is not None:
        return diffusers.LDMPipeline(vqvae=net.model.codec.model, unet=stand_in, scheduler=scheduler)
    if sched.sampler.kind in ("unipc", "heun"):  # DDPMPipeline and DDIMPipeline pass a generator to step
        raise DDSMError(f"a {sched.sampler.kind} schedule of a pixel-space UNet cannot run in DDPMPipeline or "
                        f"DDIMPipeline (they pass step arguments {sched.sampler.kind}'s scheduler does not take); sample "
                        "it with ddsm.integrations.diffusers.sample_with_diffusers or ddsm sample --schedule")
    pipeline = diffusers.DDIMPipeline if sched.sampler.kind == "ddim" else diffusers.DDPMPipeline
    return pipeline(unet=stand_in, scheduler=scheduler)
