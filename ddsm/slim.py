"""Bring your own model: fine-tune a diffusers UNet2DModel's narrow widths by distillation from the original.

``ddsm slim --from-diffusers FOLDER`` makes the user's trained model the
widest net of a supernet (:class:`~ddsm.nn.slimmed.SlimmedUNet`):

1. The folder is read offline and checked (``ddsm.integrations.diffusers_folder``);
   the noise schedule and the prediction type (ε, v or x0) are the scheduler config's.
   A latent pipeline's autoencoder (``vae/``, ``vqvae/``) is copied, frozen,
   into the supernet; the training images are encoded once by it and cached in
   the run folder (``latents.safetensors``), and every sample is decoded by it
   (``ddsm.nn.autoencoder``).
2. With ``slim.order: importance``, before any step the channels of the
   shared net are reordered so every width's prefix keeps the channels whose
   producing weights have the largest norm; the full-width function is
   unchanged (``ddsm.nn.channel_order``). The default, ``none``, keeps
   diffusers' order: on the worked example the reorder was worse at width
   0.25 for the first half of the fine-tune and never better after its first
   200 steps (``experiments/bench_slim.py``, part growth).
3. Each step draws one batch (images, timesteps, noise) for every width. The
   frozen original predicts ε at full width; the sandwich of widths (the
   widest and narrowest fine-tuned width and ``n_random_widths`` random ones
   between) regress ``(1 - distill_weight) |ε̂ - ε|² + distill_weight |ε̂ - ε_original|²``
   (for a v- or x0-predicting model, the same in its own output: the data's v or x0 and the original's).
   With ``slim.hidden_weight`` > 0 each width also regresses the original's
   last hidden map (before the output convolution; its first channels, the
   width's own) in L1, the feature term the SFDDM distillation uses too.
   With ``freeze_full`` (default) width 1 is the original and is never
   trained; without it width 1 joins the sandwich, distilled like the rest.

:class:`FrozenOriginal` is this run kind's target; the step, checkpoints,
EMA, exact resume and the progress bar are :class:`ddsm.train.Trainer`'s,
the hidden-map term :class:`ddsm.loss_terms.HiddenTerm`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from ddsm.config import RunConfig
from ddsm.diffusion.losses import distilled_eps_loss
from ddsm.diffusion.prediction import model_target
from ddsm.errors import DDSMError
from ddsm.integrations.diffusers_folder import load_slim_model, model_config_for, read_diffusers_folder
from ddsm.nn.channel_order import ChannelSpace, permute_by_importance
from ddsm.targets import Batch, draw_clean_and_noise, uniform_timesteps

if TYPE_CHECKING:  # annotations only: the trainer imports this module
    from ddsm.train import Trainer


def trained_widths(config: RunConfig) -> tuple[float, ...]:
    """The widths fine-tuning moves: every width, or every width below 1 when the full width is frozen."""
    widths = config.model.geometry.widths
    return tuple(w for w in widths if w < 1.0) if config.model.diffusers.freeze_full else widths


class FrozenOriginal:
    """The slimming target: the frozen original ``config.slim.source``'s prediction (see the module docstring)."""

    def __init__(self, config: RunConfig) -> None:
        if config.slim is None or config.model.diffusers is None:
            raise DDSMError("a slim run needs a slim section and a diffusers model config (ddsm slim writes both)")
        if not trained_widths(config):
            raise DDSMError(f"widths {list(config.model.geometry.widths)} leave nothing to fine-tune with the full "
                            "width frozen; add narrower widths")
        self.config = config
        self.order: list[ChannelSpace] = []

    def prepare(self) -> None:
        config = self.config
        self.source = read_diffusers_folder(config.slim.source)
        if self.source.is_dit and config.slim.order == "importance":
            raise DDSMError("slim.order 'importance' reorders a UNet's channels; a DiT keeps its heads' order "
                            "(use order 'none')")
        found = model_config_for(self.source, config.model.geometry.widths, config.model.diffusers.freeze_full,
                                 config.model.diffusers.null_label)
        if found.fingerprint() != config.model.fingerprint():
            raise DDSMError(f"the model in {config.slim.source!r} is not the one this run slims (its config or "
                            "weights changed); slim it into a new --out")

    def attach(self, trainer: "Trainer") -> None:
        self.teacher = load_slim_model(self.source, widths=(1.0,)).to(trainer.device).requires_grad_(False)
        if self.source.autoencoder is not None:  # the user's autoencoder, frozen, in the supernet (every run)
            trainer.model.codec.model.load_state_dict(load_file(str(self.source.autoencoder.weights)), strict=True)
        if self.config.train.init_from is None:
            with torch.no_grad():
                state = self.teacher.state_dict()
                trainer.model.net.load_state_dict(state)
                if trainer.model.original is not None:
                    trainer.model.original.load_state_dict(state)
                if self.config.slim.order == "importance":
                    self.order = permute_by_importance(trainer.model.net, self.config.slim.criterion)

    def inputs(self) -> dict[str, str]:
        return {}  # the original's weights hash is part of the model config (model.diffusers.weights_sha256)

    def widths(self) -> tuple[float, ...]:
        return trained_widths(self.config)

    def draw(self, trainer: "Trainer") -> Batch:
        x0, t, eps, cond = draw_clean_and_noise(trainer, uniform_timesteps(trainer.schedule.num_timesteps))
        t = t.to(trainer.device)
        x_t = trainer.schedule.q_sample(x0, t, eps)
        with torch.no_grad(), trainer.autocast():
            # a dropped label is the null label num_classes: the original's last class embedding (slim.null_label)
            target, hidden = self.teacher(x_t, t, class_labels=cond, return_hidden=True)  # the map either way
        target = target[:, : x_t.shape[1]]  # a DiT that learns its variance predicts it in its last channels
        kind = trainer.schedule.prediction_type
        # a v- or x0-predicting original: the data term regresses the same quantity the original outputs
        data = None if kind == "epsilon" else \
            model_target(eps, x0, trainer.schedule.alpha_bar_at(t.cpu()).to(x0).view(-1, 1, 1, 1), kind)
        return Batch(x_t=x_t, t=t, eps=eps, reference=target, reference_hidden=hidden, cond=cond, data_target=data)

    def eps_term(self, pred: torch.Tensor, batch: Batch, widest: torch.Tensor | None) -> torch.Tensor:
        # Every fine-tuned width regresses the original (never an in-place teacher: the original is better).
        data = batch.eps if batch.data_target is None else batch.data_target
        return distilled_eps_loss(pred, data, batch.reference, self.config.train.distill_weight)
