"""Supernet checkpoints: safetensors files with their config and fingerprint inside.

Two kinds share one file format (tensors + a JSON header under the
``ddsm`` metadata key):

- ``ddsm.train_state``: a resumable training run (weights, EMA, optimizer,
  random-generator states, step, elapsed time), ``RUN_DIR/checkpoint.safetensors``.
- ``ddsm.supernet``: weights only (the EMA), for sampling, search and shipping.

Nothing here unpickles user data: safetensors holds tensors and strings only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ddsm.config import DataConfig, ModelConfig, RunConfig, load_yaml, validate
from ddsm.data import load_data
from ddsm.errors import DDSMError
from ddsm.io import atomic_path, weights_sha256
from ddsm.limits import clip, short
from ddsm.nn.backbone import Backbone
from ddsm.nn.registry import build_backbone

SCHEMA_VERSION = 1
TRAIN_STATE = "ddsm.train_state"
SUPERNET = "ddsm.supernet"
#: names accepted in place of a path: supernets shipped inside the package
SHIPPED = {"digits": "digits.safetensors", "digits-progressive": "digits-progressive.safetensors",
           "digits-spectral": "digits-spectral.safetensors",
           # SFDDM v students of "digits" (K = 2, 4, 8 sampling steps; experiments/configs/digits-sfddm-v.yaml)
           **{f"digits-sfddm-k{k}": f"digits-sfddm-k{k}.safetensors" for k in (2, 4, 8)},
           # class-conditional references on the built-in mnist data (experiments/configs/mnist-{dit,unet}.yaml)
           "mnist-dit": "mnist-dit.safetensors", "mnist-unet": "mnist-unet.safetensors",
           # v students of "mnist-unet", snapshots chosen on search seeds: 2 and 8 steps, guided at scale 1.5
           # when sampled; 4 steps with guidance scale 1.5 distilled in (sampled unguided, one pass a step)
           **{f"mnist-sfddm-k{k}": f"mnist-sfddm-k{k}.safetensors" for k in (2, 4, 8)}}


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
    """Write ``tensors`` and a JSON ``header`` atomically as one safetensors file."""
    header = {"schema_version": SCHEMA_VERSION, **header}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"ddsm": json.dumps(header)})


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a ddsm safetensors file; one-line DDSMError if it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise DDSMError(f"checkpoint file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        header = json.loads(meta["ddsm"])
    except (SafetensorError, OSError, KeyError, ValueError, RecursionError) as e:
        raise DDSMError(clip(f"checkpoint {str(path)!r} is corrupt or not a ddsm checkpoint ({type(e).__name__}: "
                             f"{clip(str(e), 120)})")) from None
    if not isinstance(header, dict):
        raise DDSMError(f"checkpoint {str(path)!r} is not a ddsm checkpoint: its header is a {type(header).__name__}")
    if header.get("schema_version") != SCHEMA_VERSION:
        raise DDSMError(
            f"checkpoint {str(path)!r} has schema_version {short(header.get('schema_version'))}; this ddsm reads "
            f"{SCHEMA_VERSION}"
        )
    return tensors, header


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.``, with the prefix stripped."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Human-readable list of the leaves where two nested dicts differ."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} {va!r} vs {vb!r}")
    return out


def check_same_architecture(found: ModelConfig, expected: ModelConfig, where: str) -> None:
    """Raise naming every differing field when two model configs disagree."""
    if found.fingerprint() != expected.fingerprint():
        diff = config_diff(found.model_dump(mode="json"), expected.model_dump(mode="json"))
        raise DDSMError(
            f"{where} holds architecture {found.fingerprint()} but the config describes {expected.fingerprint()}; "
            f"differs in: {'; '.join(diff)} (checkpoint vs config)"
        )


@dataclass
class Supernet:
    """A loaded supernet: the model, its config and where it came from."""

    model: Backbone  # ddsm's UNet, a slimmed diffusers model, or any registered backbone
    config: ModelConfig
    header: dict[str, Any]
    source: str

    @property
    def fingerprint(self) -> str:
        """The architecture's identity (config hash): equal for two trainings of one recipe."""
        return self.config.fingerprint()

    @property
    def weights_sha256(self) -> str:
        """The weights' identity: the sha256 of the file they were loaded from (:func:`ddsm.io.weights_sha256`)."""
        return weights_sha256(self.source)

    @property
    def trained_resolutions(self) -> tuple[int, ...]:
        """Sides the supernet was trained at (its recipe's ``train.resolutions`` plus the image size)."""
        run = self.header.get("run") or {}
        extra = (run.get("train") or {}).get("resolutions") or ()
        return tuple(sorted({*map(int, extra), self.config.geometry.image_size}))


def resolve_checkpoint(ref: str | Path) -> Path:
    """Map a shipped name, a run folder or a file to the safetensors file to read."""
    ref_s = str(ref)
    if ref_s in SHIPPED and not Path(ref_s).exists():
        path = Path(str(resources.files("ddsm") / "assets" / SHIPPED[ref_s]))
        if not path.is_file():
            raise DDSMError(f"the shipped supernet {ref_s!r} is missing from this installation ({path})")
        return path
    p = Path(ref_s)
    if p.is_dir():
        for name in ("supernet.safetensors", "checkpoint.safetensors"):
            if (p / name).is_file():
                return p / name
        raise DDSMError(f"run folder {ref_s!r} holds no supernet.safetensors or checkpoint.safetensors")
    if p.is_file():
        return p
    raise DDSMError(
        f"checkpoint {ref_s!r} not found; give a run folder, a .safetensors file, or a shipped name ({', '.join(SHIPPED)})"
    )


def load_supernet(ref: str | Path, *, device: str | torch.device = "cpu", expected: ModelConfig | None = None,
                  ema: bool = True) -> Supernet:
    """Load a supernet for sampling: EMA weights of a training state, or a weights-only file.

    With ``expected``, a checkpoint of another architecture is refused with the differing fields named.
    """
    path = resolve_checkpoint(ref)
    tensors, header = read_tensors(path)
    kind = header.get("kind")
    if kind not in (TRAIN_STATE, SUPERNET):
        raise DDSMError(f"checkpoint {str(path)!r} is of kind {short(kind)}; expected {TRAIN_STATE} or {SUPERNET}")
    config = validate(ModelConfig, header.get("model"), source=f"checkpoint {path}")
    if header.get("fingerprint") != config.fingerprint():
        raise DDSMError(f"checkpoint {str(path)!r} is corrupt: stored fingerprint does not match its own config")
    if expected is not None:
        check_same_architecture(config, expected, f"checkpoint {str(path)!r}")
    weights = prefixed(tensors, "ema" if kind == TRAIN_STATE and ema else "model")
    model = build_backbone(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise DDSMError(
            f"checkpoint {str(path)!r} does not fit its own architecture: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.to(device).eval()
    return Supernet(model=model, config=config, header=header, source=str(path))


def save_supernet(path: str | Path, model: Backbone, config: ModelConfig, state_dict: dict[str, torch.Tensor] | None = None,
                  dtype: torch.dtype | None = None, **info: Any) -> None:
    """Write a weights-only supernet file (``state_dict`` defaults to the model's own)."""
    sd = state_dict if state_dict is not None else model.state_dict()
    tensors = {f"model.{k}": (v.to(dtype) if dtype is not None else v) for k, v in sd.items()}
    save_tensors(path, tensors, {"kind": SUPERNET, "model": config.model_dump(mode="json"),
                                 "fingerprint": config.fingerprint(), **info})


def data_config_for(checkpoint: str | Path) -> DataConfig:
    """The data a supernet was trained on: its run folder's config.json, else the recipe in its file's header (a
    shipped or exported supernet), else the default (digits)."""
    path = resolve_checkpoint(checkpoint)
    for folder in (path.parent, path.parent.parent):  # a run folder, or its snapshots/ subfolder
        run_config = folder / "config.json"
        if run_config.is_file():
            return validate(RunConfig, load_yaml(run_config), source=str(run_config)).data
    data = (read_tensors(path)[1].get("run") or {}).get("data")
    return DataConfig() if data is None else validate(DataConfig, data, source=f"checkpoint {path}")


def training_data(checkpoint: str | Path, unet=None):
    """The images a supernet was trained on (:func:`data_config_for`), at its ``unet``'s size and channels (None: the
    supernet's image geometry, a latent model's decoder's)."""

    if unet is None:
        unet = load_supernet(checkpoint).config.image_geometry
    return load_data(data_config_for(checkpoint), unet.image_size, unet.in_channels,
                     labelled=bool(getattr(unet, "num_classes", 0)))

