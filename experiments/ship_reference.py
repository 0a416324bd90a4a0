"""Export a finished training run as the shipped reference supernet (EMA weights only).

    python experiments/ship_reference.py runs/digits-reference --name digits \
        --command "ddsm train --config experiments/configs/digits-reference.yaml --out runs/digits-reference"

A distillation run ships the same way (its student header keeps K, phi and the teacher's fingerprint):

    python experiments/ship_reference.py runs/sfddm-k4 --name digits-sfddm-k4 \
        --command "ddsm distill --teacher digits --steps 4 --sub-steps 5 --config experiments/configs/digits-sfddm.yaml --out runs/sfddm-k4"

``--snapshot STEP`` ships the run's EMA snapshot of that step instead of its end (a snapshot chosen on search
seeds, when a distillation's quality does not end at its last step).

Writes ddsm/assets/<name>.safetensors (its header carries the full recipe,
step count and training time) and ddsm/assets/<name>.recipe.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ddsm import Trainer
from ddsm.checkpoint import read_tensors, save_tensors
from ddsm.config import RunConfig, validate
from ddsm.data import ImageData
from ddsm.io import write_json

ASSETS = Path(__file__).resolve().parent.parent / "ddsm" / "assets"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--name", default="digits")
    ap.add_argument("--command", required=True, help="the exact command that trained the run")
    ap.add_argument("--wall-minutes", type=float, default=None, help="wall-clock duration of the run, if known")
    ap.add_argument("--note", default="", help="anything a reader needs to reproduce it")
    ap.add_argument("--snapshot", type=int, default=None, help="ship the EMA snapshot of this step (snapshots/)")
    args = ap.parse_args(argv)

    _, header = read_tensors(args.run_dir / "checkpoint.safetensors")
    cfg = validate(RunConfig, header["run"], source="checkpoint")
    snapshot = None
    if args.snapshot is not None:  # checked before the trainer loads: a bad step is one line, exit 2
        snaps = args.run_dir / "snapshots"
        path = snaps / f"ema-{args.snapshot:06d}.safetensors"
        if not path.is_file():
            steps = sorted(int(f.stem.split("-")[1]) for f in snaps.glob("ema-*.safetensors"))
            ap.error(f"--snapshot {args.snapshot}: {args.run_dir} has no EMA snapshot of that step (it has {steps})")
        snapshot = read_tensors(path)
        if snapshot[1].get("fingerprint") != cfg.model.fingerprint():
            ap.error(f"--snapshot {args.snapshot}: {path} is not a snapshot of this run's model")
    if header["step"] != cfg.train.iters:
        print(f"warning: run stopped at step {header['step']} of {cfg.train.iters}", file=sys.stderr)
    # The export needs no data; an empty stand-in avoids loading it. A distillation run (an SFDDM
    # student) is restored by the same trainer, which also checks the teacher it names.
    trainer = Trainer(cfg, args.run_dir, device="cpu", progress=False, data=_placeholder(cfg))
    trainer.load_checkpoint()
    recipe = {"command": args.command, "seed": cfg.train.seed, "iters": trainer.step,
              "train_seconds": round(trainer.train_seconds, 1), "wall_minutes": args.wall_minutes,
              "fingerprint": cfg.model.fingerprint(), "note": args.note}
    if snapshot is None:
        trainer.export(ASSETS / f"{args.name}.safetensors", recipe=recipe)
    else:  # the snapshot's own weights and header (its step and training time), with the recipe added
        tensors, head = snapshot
        recipe.update(iters=head["step"], train_seconds=head["train_seconds"], snapshot_of=trainer.step)
        save_tensors(ASSETS / f"{args.name}.safetensors", tensors, {**head, "recipe": recipe})
    write_json(ASSETS / f"{args.name}.recipe.json", {**recipe, "config": cfg.model_dump(mode="json")})
    print(json.dumps(recipe, indent=2))
    return 0


def _placeholder(cfg: RunConfig) -> ImageData:
    import torch

    g = cfg.model.geometry
    x = torch.zeros(1, g.in_channels, g.image_size, g.image_size)
    y = torch.zeros(1, dtype=torch.long) if g.num_classes else None  # a conditional model's trainer wants labels
    return ImageData("placeholder", x, x[:0], y, None if y is None else y[:0])


if __name__ == "__main__":
    sys.exit(main())
