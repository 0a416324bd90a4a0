"""Extra loss terms a training run adds to each width's ε term, each logged under its own name.

A term is weighted into the loss that is back-propagated; ``metrics.jsonl``
logs the unweighted term as ``<name>@<width>`` beside ``loss@<width>``, which
is always the ε term alone, so two runs' logs mean the same thing whatever
terms they add. Which terms a run has is :func:`loss_terms`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from ddsm.config import RunConfig
from ddsm.diffusion.losses import hidden_loss, spectral_distill_loss, spectrum_weights, time_weighted_spectrum
from ddsm.diffusion.resolution import downsample
from ddsm.targets import Batch

if TYPE_CHECKING:  # annotations only: the trainer imports this module
    from ddsm.train import Trainer


class LossTerm(Protocol):
    """One extra term: ``weight * value`` joins a width's loss when ``applies``."""

    name: str  # logged as <name>@<width>
    weight: float
    needs_hidden: bool  # the network must also return its last hidden map

    def check(self) -> None:
        """Refuse, before the run takes its folder's lock, inputs this term cannot work with (a one-line DDSMError)."""

    def applies(self, widest: torch.Tensor | None) -> bool:
        """Whether the term joins this width's loss (``widest`` is None for the first width of the sandwich)."""

    def __call__(self, pred: torch.Tensor, hidden: torch.Tensor | None, batch: Batch,
                 widest: torch.Tensor | None) -> torch.Tensor:
        """The unweighted term for one width."""


class SpectralTerm:
    """Spectrum-aware distillation (Spectral Diffusion): narrow widths match the widest's clean image per frequency."""

    name, needs_hidden = "spectral", False

    def __init__(self, trainer: "Trainer") -> None:
        cfg = trainer.config.train
        self.trainer, self.weight = trainer, cfg.spectral_weight
        self._weights: dict[int, torch.Tensor] = {}  # per side, made on first use

    def frequency_weights(self, side: int) -> torch.Tensor:
        """The per-frequency weights at ``side``, from the training images (refuses data without a spectrum)."""
        if side not in self._weights:
            tr = self.trainer
            x = tr.x_train if side == tr.x_train.shape[-1] else downsample(tr.x_train, side, tr.transform)
            self._weights[side] = spectrum_weights(x, tr.config.train.spectral_floor).to(tr.device)
        return self._weights[side]

    def check(self) -> None:
        self.frequency_weights(self.trainer.config.model.geometry.image_size)  # data without a spectrum is refused

    def applies(self, widest: torch.Tensor | None) -> bool:
        return widest is not None

    def __call__(self, pred, hidden, batch, widest):
        cfg, schedule = self.trainer.config.train, self.trainer.schedule
        weights = self.frequency_weights(pred.shape[-1])
        if cfg.spectral_schedule == "late_high":
            weights = time_weighted_spectrum(weights, batch.t, schedule.num_timesteps)
        return spectral_distill_loss(pred, widest, weights, schedule.alpha_bar_at(batch.t.cpu()), cfg.spectral_gamma)


class HiddenTerm:
    """L1 of each width's last hidden map to the frozen reference model's (its first channels: the width's own)."""

    name, needs_hidden = "hidden", True

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def check(self) -> None:
        pass

    def applies(self, widest: torch.Tensor | None) -> bool:
        return True

    def __call__(self, pred, hidden, batch, widest):
        return hidden_loss(hidden, batch.reference_hidden)


def loss_terms(config: RunConfig, trainer: "Trainer") -> list[LossTerm]:
    """The extra terms of a run, in the order they are added; a weight of 0 adds none (training is then exactly without it)."""
    terms: list[LossTerm] = []
    if config.train.spectral_weight > 0:
        terms.append(SpectralTerm(trainer))
    hidden = config.distill.hidden_weight if config.distill is not None else \
        config.slim.hidden_weight if config.slim is not None else 0.0
    if hidden:
        terms.append(HiddenTerm(hidden))
    return terms
