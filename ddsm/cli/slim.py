"""``ddsm slim``: a user's diffusers UNet2DModel becomes a supernet, its narrow widths fine-tuned from it."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ddsm.cli import _device, main
from ddsm.cli.model import _run_to_the_end


@main.command()
@click.option("--from-diffusers", "source", default=None,
              help="The model: a local diffusers UNet2DModel folder (config.json + safetensors) or a pipeline folder "
                   "with unet/ and scheduler/. Never a hub id: ddsm does not download. [--resume: the run's]")
@click.option("--data", default=None, help="Fine-tuning images, of the model's own size and channels: 'digits', a "
              "folder of PNG/JPEG images, or 'torchvision:NAME:ROOT'. [default: digits, or the config's]")
@click.option("--iters", type=int, default=None, help="Total optimizer steps (overrides train.iters of the config).")
@click.option("--width", "widths", type=float, multiple=True,
              help="A width the supernet serves (repeat; 1.0 is added) [default: 0.25 0.5 0.75 1, or the config's].")
@click.option("--order", type=click.Choice(["importance", "none"]), default=None,
              help="Channel order before fine-tuning: importance (largest weight norms first) or none (diffusers' "
                   "own) [default: none, or the config's; measured, the reorder did not help: README].")
@click.option("--hidden-weight", type=click.FloatRange(min=0.0), default=None,
              help="Weight of the hidden-map term: L1 of each width's last hidden map to the original's "
                   "[default: 0, or the config's].")
@click.option("--null-label", type=click.Choice(["last", "none"]), default=None,
              help="A class-conditional model's last class embedding is its unconditional label (last: guidance and "
                   "label dropout work), or it has none [default: none].")
@click.option("--unfreeze-full", is_flag=True, help="Fine-tune width 1 too (distilled towards the original); by "
              "default width 1 stays the untouched original.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML with data/train/slim sections (see experiments/configs/slim-user-model.yaml). Unset keys "
                   "keep their defaults.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Run folder for checkpoints, the resolved config, the metrics log and supernet.safetensors.")
@click.option("--resume", is_flag=True, help="Continue the fine-tune in --out exactly where it stopped.")
@click.option("--seed", type=int, default=None, help="Seed of every random draw (overrides train.seed).")
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar with loss, rate and ETA.")
def slim(source, data, iters, widths, order, hidden_weight, null_label, unfreeze_full, config_file, out, resume, seed,
         device, progress) -> None:
    """Slim a diffusers UNet2DModel into a supernet: fine-tune its narrow widths by distillation from it."""
    from ddsm.data import check_native_shape
    from ddsm.run_configs import slim_run_config
    from ddsm.train import Trainer

    cfg = slim_run_config(out, source=source, config_file=config_file, resume=resume, data=data, widths=widths,
                          order=order, hidden_weight=hidden_weight, unfreeze_full=unfreeze_full, iters=iters, seed=seed,
                          null_label=null_label)
    check_native_shape(cfg.data, cfg.model.image_geometry.image_size, cfg.model.image_geometry.in_channels)
    slimmer = Trainer(cfg, out, device=device, progress=progress)
    start = time.perf_counter()
    _run_to_the_end(slimmer, resume, f"ddsm slim --out {out} --resume")
    click.echo(f"fine-tuned widths {list(cfg.model.geometry.widths)} of {cfg.slim.source!r} for {slimmer.step} steps "
               f"({slimmer.train_seconds:.0f} s of training in total, {time.perf_counter() - start:.0f} s this run) "
               f"-> {Path(out) / 'supernet.safetensors'}")
