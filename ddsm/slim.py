"""Bring your own model: fine-tune a diffusers UNet2DModel's narrow widths by distillation from the original.

``ddsm slim --from-diffusers FOLDER`` makes the user's trained model the
widest net of a supernet (:class:`~ddsm.nn.slimmed.SlimmedUNet`):

1. The folder is read offline and checked (``ddsm.integrations.diffusers_folder``);
   the noise schedule is the scheduler config's, ε-prediction only.
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
   between) regress ``(1 - distill_weight) |ε̂ - ε|² + distill_weight |ε̂ - ε_original|²``.
   With ``slim.hidden_weight`` > 0 each width also regresses the original's
   last hidden map (before the output convolution; its first channels, the
   width's own) in L1, the feature term the SFDDM distillation uses too.
   With ``freeze_full`` (default) width 1 is the original and is never
   trained; without it width 1 joins the sandwich, distilled like the rest.

Checkpoints, EMA, exact resume and the progress bar are
:class:`ddsm.train.Trainer`'s.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddsm.config import RunConfig
from ddsm.data import ImageData
from ddsm.diffusion.losses import distilled_eps_loss, hidden_loss
from ddsm.errors import DDSMError
from ddsm.integrations.diffusers_folder import load_slim_unet, model_config_for, read_diffusers_folder
from ddsm.nn.channel_order import ChannelSpace, permute_by_importance
from ddsm.train import Trainer, learning_rate, sandwich_widths


def trained_widths(config: RunConfig) -> tuple[float, ...]:
    """The widths fine-tuning moves: every width, or every width below 1 when the full width is frozen."""
    widths = config.model.unet.widths
    return tuple(w for w in widths if w < 1.0) if config.model.diffusers.freeze_full else widths


class Slimmer(Trainer):
    """Fine-tune the narrow widths of ``config.slim.source`` into ``out_dir`` (see the module docstring)."""

    def __init__(self, config: RunConfig, out_dir: str | Path, *, device: str | None = None,
                 data: ImageData | None = None, progress: bool = True) -> None:
        if config.slim is None or config.model.diffusers is None:
            raise DDSMError("a slim run needs a slim section and a diffusers model config (ddsm slim writes both)")
        if not trained_widths(config):
            raise DDSMError(f"widths {list(config.model.unet.widths)} leave nothing to fine-tune with the full width "
                            "frozen; add narrower widths")
        # The folder before the data: a changed or foreign model is refused before anything is loaded.
        self.source = read_diffusers_folder(config.slim.source)
        found = model_config_for(self.source, config.model.unet.widths, config.model.diffusers.freeze_full)
        if found.fingerprint() != config.model.fingerprint():
            raise DDSMError(f"the model in {config.slim.source!r} is not the one this run slims (its config or "
                            "weights changed); slim it into a new --out")
        super().__init__(config, out_dir, device=device, data=data, progress=progress)
        self.teacher = load_slim_unet(self.source, widths=(1.0,)).to(self.device).requires_grad_(False)
        self.order: list[ChannelSpace] = []
        if config.train.init_from is None:
            self._start_from_original()
        # Only the shared net is trained; the frozen original gets no optimizer state.
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay)

    def _start_from_original(self) -> None:
        with torch.no_grad():
            state = self.teacher.state_dict()
            self.model.net.load_state_dict(state)
            if self.model.original is not None:
                self.model.original.load_state_dict(state)
            if self.config.slim.order == "importance":
                self.order = permute_by_importance(self.model.net, self.config.slim.criterion)
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def train_step(self, widths: list[float] | None = None) -> dict[str, float]:
        """One optimizer step over the sandwich of fine-tuned widths against the frozen original."""
        cfg = self.config.train
        idx = torch.randint(len(self.x_train), (cfg.batch_size,), generator=self.gen)
        t = torch.randint(self.schedule.num_timesteps, (cfg.batch_size,), generator=self.gen)
        eps = torch.randn((cfg.batch_size, *self.x_train.shape[1:]), generator=self.gen).to(self.device)
        x0 = self.x_train[idx.to(self.device)]
        t = t.to(self.device)
        x_t = self.schedule.q_sample(x0, t, eps)
        hw = self.config.slim.hidden_weight
        with torch.no_grad(), self._autocast():
            target, teacher_hidden = self.teacher(x_t, t, return_hidden=True)  # the map is computed either way
        if widths is None:
            ws = trained_widths(self.config)
            widths = sandwich_widths(ws, cfg.n_random_widths, self.gen)
        for g in self.opt.param_groups:
            g["lr"] = learning_rate(self.step, cfg)
        self.opt.zero_grad(set_to_none=True)
        losses: dict[str, float] = {}
        for w in widths:
            self.model.set_active_width(w)
            with self._autocast():
                pred, hidden = self.model(x_t, t, return_hidden=True)
            loss = distilled_eps_loss(pred, eps, target, cfg.distill_weight)
            losses[f"loss@{w:g}"] = float(loss.detach())  # the ε part, comparable with and without hidden_weight
            if hw:
                term = hidden_loss(hidden, teacher_hidden)
                losses[f"hidden@{w:g}"] = float(term.detach())
                loss = loss + hw * term
            self.scaler.scale(loss).backward()
        losses["grad_norm"] = self._optimizer_step()
        return losses

    def progress_losses(self, losses: dict[str, float]) -> dict[str, str]:
        """The widest and the narrowest fine-tuned width's loss, for the progress bar."""
        ws = trained_widths(self.config)
        return {"widest": f"{losses[f'loss@{ws[-1]:g}']:.4f}", "narrow": f"{losses[f'loss@{ws[0]:g}']:.4f}"}
