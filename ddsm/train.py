"""The one trainer: sandwich rule, one composed training step, EMA, exact resume, for every kind of run.

Each step draws one batch (images, timesteps, noise) shared by every width,
from the run's *target* (:mod:`ddsm.targets`): the data's noise (``train``),
a teacher's multi-step transition (``distill``) or a frozen original model
(``slim``). The widest, the narrowest and ``n_random_widths`` random widths
each compute the target's ε term plus the run's extra *loss terms*
(:mod:`ddsm.loss_terms`: spectrum-aware, hidden map); gradients of all widths
accumulate into the shared weights before one AdamW step. In plain training
the narrow widths regress a mix of the noise and the widest net's detached
prediction (in-place distillation, Yu & Huang 2019).

Every random draw comes from one seeded generator whose state, with the
optimizer, the EMA and torch's global RNG (dropout), is in each checkpoint:
a run stopped and resumed ends bit-for-bit where an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ddsm.checkpoint import (
    TRAIN_STATE, check_same_architecture, config_diff, load_supernet, prefixed, read_tensors, save_supernet,
    save_tensors,
)
from ddsm.config import RunConfig, validate
from ddsm.data import ImageData, load_data
from ddsm.device import resolve_device
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.distill import TeacherTransition
from ddsm.errors import DDSMError
from ddsm.io import write_atomic, write_json
from ddsm.loss_terms import loss_terms
from ddsm.nn.registry import build_backbone
from ddsm.runfolder import check_run_folder, start_under_lock
from ddsm.samplers.progressive import family_transform
from ddsm.slim import FrozenOriginal
from ddsm.targets import NoiseTarget, Target

# Settings that may change between a run and its resume (iters only stays exact with constant decay).
RESUMABLE_CHANGES = {"iters", "checkpoint_every", "snapshot_every", "threads"}

#: the target of each run kind (``RunConfig.kind``): a new kind of training is a target class and a line here
TARGETS: dict[str, type] = {"train": NoiseTarget, "distill": TeacherTransition, "slim": FrozenOriginal}


def learning_rate(step: int, cfg) -> float:
    """Linear warm-up to ``lr``, then constant or cosine decay to ``min_lr_ratio * lr``."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_decay == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.iters - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def sandwich_widths(widths: tuple[float, ...], n_random: int, gen: torch.Generator) -> list[float]:
    """Widest, narrowest, then ``n_random`` draws from the widths strictly between."""
    chosen = [widths[-1]] + ([widths[0]] if len(widths) > 1 else [])
    middle = widths[1:-1]
    for _ in range(n_random if middle else 0):
        chosen.append(middle[int(torch.randint(len(middle), (1,), generator=gen))])
    return chosen


class Trainer:
    """Train a supernet into ``out_dir`` as ``config`` says (train, distill or slim); ``run(resume=True)`` continues."""

    def __init__(self, config: RunConfig, out_dir: str | Path, *, device: str | None = None,
                 data: ImageData | None = None, progress: bool = True) -> None:
        self.config = config
        self.target: Target = TARGETS[config.kind](config)
        self.target.prepare()  # a wrong teacher or a changed model folder is refused before anything else
        self.out = check_run_folder(out_dir, kind="training run")  # before the data is loaded
        self.device = resolve_device(device)
        self.progress = progress
        cfg = config.train
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        unet = config.model.geometry
        images = config.model.image_geometry  # a latent model's data: images of its decoder's side and channels
        self.data = data if data is not None else load_data(config.data, images.image_size, images.in_channels,
                                                            labelled=bool(unet.num_classes))
        if len(self.data.train) == 0:
            raise DDSMError(f"data source {config.data.source!r} left no training images after the held-out split")
        self.x_train = self.data.train.to(self.device)
        self.y_train = self._train_labels()  # on the CPU: indexed by the CPU-drawn image indices
        self.schedule = NoiseSchedule(config.model.diffusion)
        self.transform = family_transform(unet)  # the sampler's own orthonormal family
        # Seed before building the model: its initial weights are a random draw of training too.
        torch.manual_seed(cfg.seed)
        self.model = build_backbone(config.model).to(self.device)
        self.target.attach(self)  # frozen models, and the start weights (a teacher's, an original's)
        # The weights the run starts from or regresses, by content: a resume refuses another file in their place.
        self.inputs = self.target.inputs()
        if cfg.init_from is not None:
            start = load_supernet(cfg.init_from, expected=config.model)
            self.model.load_state_dict(start.model.state_dict())
            self.inputs["init_from"] = start.weights_sha256
        self.terms = loss_terms(config, self)
        self.want_hidden = any(term.needs_hidden for term in self.terms)  # the network also returns its last map
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        # Only what training moves gets optimizer state (a slimmed model's frozen original does not).
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.train_seconds = 0.0
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # -- setup -----------------------------------------------------------------

    def _latents(self) -> torch.Tensor:
        """The training images encoded by the model's autoencoder, once: cached in ``latents.safetensors`` beside
        the checkpoints, keyed by the data's and the autoencoder's content (a resume reads them back)."""
        from ddsm.checkpoint import read_tensors, save_tensors
        from ddsm.nn.autoencoder import encode_in_batches

        key = {"data": self.data.fingerprint(), "autoencoder": self.config.model.diffusers.autoencoder.weights_sha256}
        path = self.out / "latents.safetensors"
        if path.is_file():
            tensors, header = read_tensors(path)
            if {k: header.get(k) for k in key} == key:
                return tensors["latents"]
        latents = encode_in_batches(self.model.codec, self.data.train, progress=self.progress)
        save_tensors(path, {"latents": latents}, key)
        return latents

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.config.train.amp
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp == "fp16" and self.device.type != "cuda":
            raise DDSMError("amp 'fp16' needs a CUDA device; on the CPU use 'bf16' or 'off'")
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def autocast(self):
        """The autocast context of this run (a no-op without mixed precision)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- checkpoints -----------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.safetensors"

    def save_checkpoint(self) -> None:
        """Write the whole training state atomically."""
        tensors: dict[str, torch.Tensor] = {}
        tensors.update({f"model.{k}": v for k, v in self.model.state_dict().items()})
        tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        opt_state = self.opt.state_dict()
        for i, st in opt_state["state"].items():
            for name, v in st.items():
                tensors[f"optim.{i}.{name}"] = torch.as_tensor(v)
        tensors["rng.data"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.scaler.is_enabled():
            tensors["amp.scale"] = self.scaler.get_scale() * torch.ones(1)
        save_tensors(self.checkpoint_path, tensors, {
            "kind": TRAIN_STATE,
            "model": self.config.model.model_dump(mode="json"),
            "fingerprint": self.config.model.fingerprint(),
            "run": self.config.model_dump(mode="json"),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "param_groups": opt_state["param_groups"],
            **({"inputs": self.inputs} if self.inputs else {}),
        })

    def load_checkpoint(self) -> None:
        """Restore the state written by :meth:`save_checkpoint`, refusing another run's checkpoint."""
        tensors, header = read_tensors(self.checkpoint_path)
        if header.get("kind") != TRAIN_STATE:
            raise DDSMError(f"{self.checkpoint_path} is a {header.get('kind')!r}, not a resumable training state")
        saved = validate(RunConfig, header["run"], source=f"checkpoint {self.checkpoint_path}")
        check_same_architecture(saved.model, self.config.model, f"checkpoint {str(self.checkpoint_path)!r}")
        a, b = saved.model_dump(mode="json"), self.config.model_dump(mode="json")
        for d in (a, b):
            for k in RESUMABLE_CHANGES:
                d["train"].pop(k)
        diff = config_diff(a, b)
        if diff:
            raise DDSMError(f"cannot resume {str(self.out)!r} with a different recipe; differs in: {'; '.join(diff)} (checkpoint vs now)")
        changed = [k for k, v in (header.get("inputs") or {}).items() if self.inputs.get(k) != v]
        if changed:  # a checkpoint written before inputs were recorded has none to compare
            k = changed[0]
            raise DDSMError(f"cannot resume {str(self.out)!r}: the {k} weights changed since the run started (sha256 "
                            f"{header['inputs'][k][:12]}... then, {str(self.inputs.get(k))[:12]}... now); put the "
                            "original file back or start a new --out")
        # only a resume that goes ahead warns: a refused one says one thing
        if saved.train.iters != self.config.train.iters and self.config.train.lr_decay == "cosine":
            warnings.warn(f"resuming with iters {self.config.train.iters} instead of {saved.train.iters} stretches the "
                          "cosine learning-rate decay: the result will differ from an uninterrupted run", stacklevel=2)
        self.model.load_state_dict(prefixed(tensors, "model"))
        self.ema = {k: v.to(self.device) for k, v in prefixed(tensors, "ema").items()}
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in prefixed(tensors, "optim").items():
            i, name = k.split(".", 1)
            state.setdefault(int(i), {})[name] = v.to(self.device) if name != "step" else v
        self.opt.load_state_dict({"state": state, "param_groups": header["param_groups"]})
        self.gen.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
        if "amp.scale" in tensors and self.scaler.is_enabled():
            self.scaler.update(float(tensors["amp.scale"]))
        self.step = int(header["step"])
        self.train_seconds = float(header["train_seconds"])

    def export(self, path: str | Path, **info: Any) -> None:
        """Write the EMA weights as a weights-only supernet file."""
        save_supernet(path, self.model, self.config.model, state_dict=self.ema, step=self.step,
                      train_seconds=round(self.train_seconds, 1), run=self.config.model_dump(mode="json"), **info)

    # -- training --------------------------------------------------------------

    def _train_labels(self) -> torch.Tensor | None:
        """The training images' class labels for a conditional model (None for an unconditional one); one-line
        DDSMError when the data has none, or labels the model has no class for."""
        n = self.config.model.geometry.num_classes
        if not n:
            return None
        src = self.config.data.source
        labels = self.data.train_labels
        if labels is None:
            raise DDSMError(f"data source {src!r} has no class labels; a class-conditional model (num_classes {n}) "
                            "needs labelled data: 'digits', a torchvision dataset, or a folder with one subfolder "
                            "per class")
        top = int(labels.max())
        if top >= n or int(labels.min()) < 0:
            raise DDSMError(f"data source {src!r} has class labels 0..{top}, but the model has num_classes {n}; "
                            f"set num_classes to {top + 1}")
        return labels.long().cpu()

    def _ema_update(self) -> None:
        cfg = self.config.train
        decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step)) if cfg.ema_warmup else cfg.ema_decay
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                self.ema[k].lerp_(v, 1 - decay)

    def train_step(self, widths: list[float] | None = None) -> dict[str, float]:
        """One optimizer step over the sandwich of widths (or the given ``widths``, widest first); returns the losses.

        ``loss@w`` is each width's ε term alone; each extra term is logged unweighted as ``<name>@w``.
        """
        cfg = self.config.train
        batch = self.target.draw(self)
        if widths is None:
            widths = sandwich_widths(self.target.widths(), cfg.n_random_widths, self.gen)
        for g in self.opt.param_groups:
            g["lr"] = learning_rate(self.step, cfg)
        self.opt.zero_grad(set_to_none=True)
        losses: dict[str, float] = {}
        widest = None  # the first width's detached prediction: the in-place teacher of the others
        for w in widths:
            self.model.set_active_width(w)
            with self.autocast():
                cond = {} if batch.cond is None else {"cond": batch.cond}  # unconditional: the call it always was
                pred, hidden = self.model(batch.x_t, batch.t, return_hidden=True, **cond) if self.want_hidden else \
                    (self.model(batch.x_t, batch.t, **cond), None)
            loss = self.target.eps_term(pred, batch, widest)
            losses[f"loss@{w:g}"] = float(loss.detach())
            for term in self.terms:
                if term.applies(widest):
                    value = term(pred, hidden, batch, widest)
                    losses[f"{term.name}@{w:g}"] = float(value.detach())
                    loss = loss + term.weight * value
            self.scaler.scale(loss).backward()
            if widest is None:
                widest = pred.detach()
        losses["grad_norm"] = self._optimizer_step()
        return losses

    def _optimizer_step(self) -> float:
        """After every width's backward: back to the widest, clip, one (scaled) AdamW step, EMA; the grad norm."""
        self.model.set_active_width(self.config.model.geometry.widths[-1])
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1
        self._ema_update()
        return float(grad_norm)

    def run(self, *, resume: bool = False) -> Path:
        """Train until ``config.train.iters``; checkpoint regularly and on interrupt."""
        start = start_under_lock(self.out, lambda: self._check_start(resume), what="training run",
                                 kind="training run")  # a refusal touches nothing, not even the lock file
        for term in self.terms:  # e.g. data without a spectrum to weight, refused before the lock
            term.check()
        with start:
            return self._run(resume)

    def _check_start(self, resume: bool) -> None:
        if resume and not self.checkpoint_path.is_file():
            raise DDSMError(f"cannot resume: {str(self.checkpoint_path)!r} does not exist (start without --resume)")
        if not resume and self.checkpoint_path.exists():
            raise DDSMError(f"{str(self.out)!r} already holds a training run; pass --resume to continue it or "
                            "choose another --out")

    def _run(self, resume: bool) -> Path:
        cfg = self.config.train
        if resume:
            self.load_checkpoint()
        write_json(self.out / "config.json", self.config.model_dump(mode="json"))
        if getattr(self.model, "codec", None) is not None:  # a latent model trains on the data's latents
            self.x_train = self._latents().to(self.device)
        log_path = self.out / "metrics.jsonl"
        self._truncate_log(log_path)
        bar = tqdm(total=cfg.iters, initial=self.step, desc="train", unit="it", disable=not self.progress)
        try:
            with log_path.open("a") as log, _interrupt_between_steps() as interrupted:
                while self.step < cfg.iters:
                    t0 = time.perf_counter()
                    losses = self.train_step()
                    self.train_seconds += time.perf_counter() - t0
                    bar.update(1)
                    if self.step % 10 == 0 or self.step == cfg.iters:
                        row = {"step": self.step, "train_seconds": round(self.train_seconds, 3),
                               "lr": learning_rate(self.step - 1, cfg), **{k: round(v, 6) for k, v in losses.items()}}
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                        bar.set_postfix(self.progress_losses(losses))
                    if cfg.snapshot_every and self.step % cfg.snapshot_every == 0:
                        self.export(self.out / "snapshots" / f"ema-{self.step:06d}.safetensors")
                    if self.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    if interrupted.is_set():
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.save_checkpoint()
            bar.close()
            raise
        bar.close()
        self.save_checkpoint()
        self.export(self.out / "supernet.safetensors")
        return self.out

    def progress_losses(self, losses: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows of one step's losses: the widest and the narrowest trained width's ε term."""
        ws = self.target.widths()
        return {"widest": f"{losses[f'loss@{ws[-1]:g}']:.4f}", "narrow": f"{losses[f'loss@{ws[0]:g}']:.4f}"}

    def _truncate_log(self, log_path: Path) -> None:
        # Lines written after the last checkpoint are replayed on resume; drop them.
        if not log_path.exists():
            return
        keep = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= self.step]
        write_atomic(log_path, lambda p: p.write_text("".join(ln + "\n" for ln in keep)))


@contextlib.contextmanager
def _interrupt_between_steps():
    """Ctrl-C (SIGINT) sets a flag that the loop reads after each step, so no step is ever half done.

    A SIGINT that raised inside a step would leave a checkpoint whose random
    stream had already drawn the next batch (or whose optimizer had stepped
    without its EMA update): resuming from it would not match an uninterrupted
    run. Off the main thread, where signal handlers cannot be set, Ctrl-C
    behaves as usual.
    """
    import signal
    import threading

    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)

