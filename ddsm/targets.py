"""Training targets: what one training step regresses, for each kind of run the one trainer serves.

A :class:`Target` draws a batch (images, timesteps, noise: every draw from the
run's seeded generator, in a fixed order) and says what each width's ε term
is. The trainer (:class:`ddsm.train.Trainer`) owns everything else: the
sandwich of widths, the learning rate, autocast, the scaler, the optimizer,
EMA, checkpoints. Three targets ship:

- :class:`NoiseTarget` (``ddsm train``): the data's own noise, with in-place
  distillation of the narrow widths from the widest (here);
- :class:`ddsm.distill.TeacherTransition` (``ddsm distill``): a teacher's
  multi-step transition (SFDDM);
- :class:`ddsm.slim.FrozenOriginal` (``ddsm slim``): a frozen original model's prediction.

A new target is one class satisfying :class:`Target` plus one line in
:data:`ddsm.train.TARGETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from ddsm.config import RunConfig
from ddsm.diffusion.losses import distilled_eps_loss, eps_loss
from ddsm.diffusion.resolution import analysis, downsample
from ddsm.errors import DDSMError

if TYPE_CHECKING:  # annotations only: the trainer imports this module
    from ddsm.train import Trainer


@dataclass
class Batch:
    """One training batch, shared by every width of the sandwich."""

    x_t: torch.Tensor  # the noisy input every width sees
    t: torch.Tensor  # the timesteps the network is called at
    eps: torch.Tensor  # the data's noise in x_t
    reference: torch.Tensor | None = None  # a frozen model's ε target at this input (teacher, original); None: none
    reference_hidden: torch.Tensor | None = None  # that model's last hidden map (for the hidden-map term)
    cond: torch.Tensor | None = None  # class labels of a conditional model (dropped ones: the null label); else None
    # the data's target in the model's prediction type (v, x0) when it is not ε; None: ``eps`` is the target
    data_target: torch.Tensor | None = None


class Target(Protocol):
    """What a run regresses; the run kinds of :data:`ddsm.train.TARGETS` each have one."""

    def prepare(self) -> None:
        """Checks that read only files (a teacher, a model folder): run before the data is loaded or anything written."""

    def attach(self, trainer: "Trainer") -> None:
        """After the supernet is built: frozen models onto the device, and the start weights (unless ``init_from``)."""

    def inputs(self) -> dict[str, str]:
        """The weights files this target reads, by name: their sha256 (a resume refuses changed ones)."""

    def widths(self) -> tuple[float, ...]:
        """The widths training moves (the sandwich is drawn from these)."""

    def draw(self, trainer: "Trainer") -> Batch:
        """One batch; every random draw from ``trainer.gen``."""

    def eps_term(self, pred: torch.Tensor, batch: Batch, widest: torch.Tensor | None) -> torch.Tensor:
        """The ε term of one width (logged as ``loss@w``); ``widest``: the first width's detached prediction, or None."""


def draw_clean_and_noise(trainer: "Trainer", draw_steps
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(clean images, steps, noise, class labels) of one batch, drawn in this order: image indices,
    ``draw_steps(n, gen)``, noise, then (a conditional model only) which labels drop to the null label.

    Images, noise and labels are on the trainer's device; the steps are as ``draw_steps`` returns them. Labels are
    None for an unconditional model, which draws nothing more (its batches are what they always were).
    """
    n, gen = trainer.config.train.batch_size, trainer.gen
    idx = torch.randint(len(trainer.x_train), (n,), generator=gen)
    steps = draw_steps(n, gen)
    eps = torch.randn((n, *trainer.x_train.shape[1:]), generator=gen).to(trainer.device)
    cond = None
    if trainer.y_train is not None:  # classifier-free guidance: one model learns p(x | y) and p(x)
        drop = torch.rand(n, generator=gen) < trainer.config.train.label_dropout
        cond = torch.where(drop, trainer.model.num_classes, trainer.y_train[idx]).to(trainer.device)
    return trainer.x_train[idx.to(trainer.device)], steps, eps, cond


def uniform_timesteps(num_timesteps: int):
    """``draw_steps`` for :func:`draw_clean_and_noise`: timesteps uniform over 0..T-1."""
    return lambda n, gen: torch.randint(num_timesteps, (n,), generator=gen)


class NoiseTarget:
    """Plain supernet training: the widest width regresses the noise, the rest a mix of it and the widest's prediction.

    With ``train.resolutions`` one side per step is drawn for the whole
    sandwich: the clean image is downsampled orthonormally and the noise
    projected the same way (still unit white), exactly as the sampler sees it
    (Spectral Progressive Diffusion).
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def prepare(self) -> None:
        kind = self.config.model.diffusion.prediction_type
        if kind != "epsilon":
            raise DDSMError(f"model.diffusion.prediction_type {kind!r}: ddsm train fits ε-predicting supernets only "
                            "(epsilon); v-predicting students come from ddsm distill --prediction v_prediction")

    def attach(self, trainer: "Trainer") -> None:
        pass

    def inputs(self) -> dict[str, str]:
        return {}

    def widths(self) -> tuple[float, ...]:
        return self.config.model.geometry.widths

    def draw(self, trainer: "Trainer") -> Batch:
        cfg = self.config.train
        x0, t, eps, cond = draw_clean_and_noise(trainer, uniform_timesteps(trainer.schedule.num_timesteps))
        t = t.to(trainer.device)
        if cfg.resolutions:
            side = self._draw_side(trainer.gen)
            x0, eps = downsample(x0, side, trainer.transform), analysis(eps, side, trainer.transform)
        return Batch(x_t=trainer.schedule.q_sample(x0, t, eps), t=t, eps=eps, cond=cond)

    def eps_term(self, pred: torch.Tensor, batch: Batch, widest: torch.Tensor | None) -> torch.Tensor:
        if widest is None:
            return eps_loss(pred, batch.eps)
        return distilled_eps_loss(pred, batch.eps, widest, self.config.train.distill_weight)

    def _draw_side(self, gen: torch.Generator) -> int:
        cfg, full = self.config.train, self.config.model.geometry.image_size
        lower = sorted(set(cfg.resolutions) - {full})
        u = float(torch.rand((), generator=gen))
        if not lower or u < cfg.full_resolution_share:
            return full
        share = cfg.full_resolution_share
        return lower[min(len(lower) - 1, int((u - share) / (1 - share) * len(lower)))]
