"""A small CNN trained on the dataset itself, whose penultimate layer is the feature space for FID.

FID compares Gaussians fitted to features of real and generated images. The
usual Inception-v3 features were learnt on 299x299 ImageNet photos; on 16x16
grayscale digits they mostly measure resizing artefacts, and the weights
would have to be downloaded. ddsm instead trains a feature net on the data
it evaluates:

- **labels** (when the dataset has class labels, e.g. digits): classify the
  class. Features then separate what makes images recognisable as their class,
  which is what sample quality on such data means.
- **rotation** (when it has none, e.g. an image folder): predict which of 0,
  90, 180 or 270 degrees an image was rotated by (Gidaris et al., 2018). It
  needs no labels and forces the net to learn shape and orientation cues.

The net is conv-SiLU stages down to a 4x4 map, a linear layer of
``num_features`` units followed by SiLU (the features), and a linear
classifier on top. Training is deterministic for a seed (its own generator for
shuffling and augmentation; initialisation under a forked global RNG).

A saved net is a safetensors file holding its architecture, task, held-out
accuracy and the fingerprint of the dataset it was trained on; loading it for
other data is refused, because its features (and any cached FID reference
statistics) would mean something else.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from ddsm.checkpoint import prefixed, read_tensors, save_tensors
from ddsm.config import _Frozen, validate
from ddsm.data import ImageData
from ddsm.errors import DDSMError

FEATURENET = "ddsm.featurenet"
#: feature nets that ship with ddsm (ddsm/assets), by name: digits (10 epochs, held-out accuracy 0.997) and mnist
#: (`ddsm featurenet --data mnist --size 32`, 10 epochs, seed 0, held-out accuracy 0.980 on the 1,000 held-out digits)
SHIPPED = {"digits": "featurenet-digits.safetensors", "mnist": "featurenet-mnist.safetensors"}


def featurenet_path(spec: str | Path) -> Path:
    """``spec`` as a file, or the shipped feature net it names (``digits``) when no such file exists."""
    if str(spec) in SHIPPED and not Path(spec).exists():
        from importlib import resources

        return Path(str(resources.files("ddsm") / "assets" / SHIPPED[str(spec)]))
    return Path(spec)


#: the ``--featurenet`` value that picks the shipped feature net of a checkpoint's built-in data
AUTO = "auto"


def featurenet_for(spec: str | Path, checkpoint: str | Path) -> str | Path:
    """``spec`` as given, or (``auto``) the shipped feature net of the data ``checkpoint`` was trained on."""
    if str(spec) != AUTO or Path(spec).exists():
        return spec
    from ddsm.checkpoint import data_config_for

    source = data_config_for(checkpoint).source
    if source not in SHIPPED:
        raise DDSMError(f"--featurenet auto: checkpoint {str(checkpoint)!r} was trained on {source!r}, which has no "
                        f"shipped feature net (shipped: {', '.join(SHIPPED)}); make one with `ddsm featurenet "
                        "--checkpoint ... --out FILE` and pass --featurenet FILE")
    return source


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` is a feature net of the installed package (read-only: no caches are written beside it)."""
    return any(Path(path).resolve() == featurenet_path(name).resolve() for name in SHIPPED)
Task = Literal["labels", "rotation"]


class FeatureNetConfig(_Frozen):
    """Architecture and task of a feature net."""

    in_channels: int = Field(gt=0)  # image channels
    image_size: int = Field(gt=0)  # square image side the net expects
    channels: int = Field(32, gt=0)  # channels of the first stage (the second has twice as many)
    num_features: int = Field(64, gt=1)  # size of the feature (penultimate) layer
    num_classes: int = Field(gt=1)  # classes of the training task
    task: Task  # 'labels' (the dataset's classes) or 'rotation' (self-supervised)


class FeatureNet(nn.Module):
    """CNN whose ``forward`` returns the (N, num_features) penultimate activations; ``logits`` classifies.

    ``num_features`` is an integer attribute, as torchmetrics' FID expects of a
    custom feature extractor. Inputs are images in [-1, 1], exactly as
    samplers return them.
    """

    def __init__(self, config: FeatureNetConfig) -> None:
        super().__init__()
        self.config = config
        self.num_features = config.num_features
        c = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(config.in_channels, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.SiLU(),
            # A fixed 4x4 map keeps the layer sizes independent of the image size.
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(2 * c * 16, config.num_features), nn.SiLU())
        self.head = nn.Linear(config.num_features, config.num_classes)
        # Set by save/load and training: what the net was trained on and how well it does.
        self.data_fingerprint: str | None = None
        self.data_name: str | None = None
        self.holdout_accuracy: float | None = None
        self.recipe: dict = {}  # training settings (seed, epochs, ...)
        self.path: Path | None = None

    def check_images(self, x: torch.Tensor, what: str = "images") -> None:
        """Raise a DDSMError unless ``x`` is (N, C, H, W) of the size this net was trained on."""
        want = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise DDSMError(f"{what} have shape {tuple(x.shape)}, but the feature net takes (N, {', '.join(map(str, want))})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (N, num_features) of images in [-1, 1]."""
        return self.embed(self.body(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the training task."""
        return self.head(self(x))

    def fingerprint(self) -> str:
        """Hash of the architecture and the exact weights (keys the FID reference-statistics cache)."""
        h = hashlib.sha256(json.dumps(self.config.model_dump(mode="json"), sort_keys=True).encode())
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- files ------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write weights, architecture, accuracy and dataset fingerprint as one safetensors file, atomically."""
        header = {
            "kind": FEATURENET,
            "arch": self.config.model_dump(mode="json"),
            "fingerprint": self.fingerprint(),
            "holdout_accuracy": self.holdout_accuracy,
            "data": {"name": self.data_name, "fingerprint": self.data_fingerprint},
            "recipe": self.recipe,
        }
        save_tensors(path, {f"net.{k}": v for k, v in self.state_dict().items()}, header)
        self.path = Path(path)

    @classmethod
    def load(cls, path: str | Path, data: ImageData | None = None) -> "FeatureNet":
        """Read a feature net (a file or a shipped name); with ``data``, refuse it unless trained on exactly that dataset."""
        path = featurenet_path(path)
        tensors, header = read_tensors(path)
        if header.get("kind") != FEATURENET:
            raise DDSMError(f"{str(path)!r} is a {header.get('kind')!r} file, not a feature net ({FEATURENET})")
        config = validate(FeatureNetConfig, header.get("arch"), source=f"feature net {path}")
        net = cls(config)
        try:
            net.load_state_dict(prefixed(tensors, "net"))
        except RuntimeError as e:
            raise DDSMError(f"feature net {str(path)!r} does not fit its own architecture: {str(e).splitlines()[0]}") from None
        stored = header.get("data") or {}
        net.data_fingerprint, net.data_name = stored.get("fingerprint"), stored.get("name")
        net.holdout_accuracy = header.get("holdout_accuracy")
        net.recipe = header.get("recipe") or {}
        net.path = Path(path)
        if header.get("fingerprint") != net.fingerprint():
            raise DDSMError(f"feature net {str(path)!r} is corrupt: its weights do not match their stored fingerprint")
        if data is not None:
            net.check_data(data, where=f"feature net {str(path)!r}")
        return net.eval()

    def check_data(self, data: ImageData, where: str = "feature net") -> None:
        """Raise a one-line DDSMError when ``data`` is not the dataset this net was trained on."""
        if self.data_fingerprint != data.fingerprint():
            raise DDSMError(
                f"{where} was trained on dataset {self.data_fingerprint} ({self.data_name}), but the data given is "
                f"{data.fingerprint()} ({data.name}); train a feature net for this data with `ddsm featurenet`"
            )


# ---------------------------------------------------------------------------- training


def _task_batch(x: torch.Tensor, y: torch.Tensor | None, task: Task, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of one training batch, with a random shift of up to one pixel as augmentation."""
    if task == "rotation":
        y = torch.randint(4, (len(x),), generator=gen)
        x = torch.stack([torch.rot90(img, int(k), dims=(-2, -1)) for img, k in zip(x, y)])
    # Pad by repeating the border (no frame the real images lack), crop back at a random offset.
    dy, dx = (int(v) for v in torch.randint(3, (2,), generator=gen))
    s = x.shape[-1]
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")[..., dy : dy + s, dx : dx + s]
    return x, y


def _all_rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xs = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    return xs, torch.arange(4).repeat_interleave(len(x))


@torch.no_grad()
def accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor | None, batch_size: int = 512) -> float:
    """Share of correct predictions of the net's task on images ``x`` (labels ``y`` for the 'labels' task)."""
    if net.config.task == "rotation":
        x, y = _all_rotations(x)
    was = net.training
    net.eval()
    correct = sum(int((net.logits(x[a : a + batch_size]).argmax(1) == y[a : a + batch_size]).sum())
                  for a in range(0, len(x), batch_size))
    net.train(was)
    return correct / max(1, len(x))


def train_featurenet(
    data: ImageData,
    *,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 5e-3,
    num_features: int = 64,
    channels: int = 32,
    task: Task | None = None,
    progress: bool = False,
) -> FeatureNet:
    """Train a feature net on ``data.train``; labels if the data has them, else rotation prediction.

    Deterministic for a seed. Reports (and stores) accuracy on ``data.holdout``.
    """
    if epochs <= 0 or batch_size <= 0 or lr <= 0:
        raise DDSMError(f"epochs ({epochs}), batch_size ({batch_size}) and lr ({lr}) must be positive")
    x, y = data.train, data.train_labels
    if len(x) < 2:
        raise DDSMError(f"dataset {data.name!r} has {len(x)} training images; a feature net needs at least 2")
    if task is None:
        task = "labels" if y is not None else "rotation"
    if task == "labels":
        if y is None:
            raise DDSMError(f"task 'labels' needs class labels, which dataset {data.name!r} lacks; use task 'rotation'")
        labels = y if data.holdout_labels is None else torch.cat([y, data.holdout_labels])
        num_classes = int(labels.max()) + 1
    else:
        if x.shape[-1] != x.shape[-2]:
            raise DDSMError(f"task 'rotation' needs square images, got {tuple(x.shape[-2:])}")
        num_classes = 4
    config = validate(FeatureNetConfig, dict(in_channels=x.shape[1], image_size=x.shape[-1], channels=channels,
                                             num_features=num_features, num_classes=max(2, num_classes), task=task),
                      source="feature net")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(config)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.2)
    net.train()
    bar = tqdm(total=total, desc="feature net", unit="step", disable=not progress)
    with bar:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for a in range(0, len(x), batch_size):
                idx = order[a : a + batch_size]
                xb, yb = _task_batch(x[idx], y[idx] if y is not None else None, task, gen)
                loss = F.cross_entropy(net.logits(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    net.eval()
    net.data_fingerprint, net.data_name = data.fingerprint(), data.name
    net.recipe = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr}
    if len(data.holdout) and (task == "rotation" or data.holdout_labels is not None):
        net.holdout_accuracy = accuracy(net, data.holdout, data.holdout_labels)
    return net


def featurenet_info(net: FeatureNet) -> dict:
    """A short JSON-able summary: task, size, accuracy, fingerprints, recipe."""
    return {"task": net.config.task, "num_features": net.num_features, "holdout_accuracy": net.holdout_accuracy,
            "data": net.data_name, "data_fingerprint": net.data_fingerprint, "fingerprint": net.fingerprint(),
            "recipe": net.recipe}
