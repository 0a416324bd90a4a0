"""Fréchet distance between generated and real images in a learnt feature space (FID).

FID (Heusel et al., 2017) fits a Gaussian to the features of real images and
one to the features of samples and reports
``|mu_r - mu_s|^2 + Tr(S_r + S_s - 2 (S_r S_s)^(1/2))``. ddsm computes it with
torchmetrics' ``FrechetInceptionDistance`` given a custom feature module,
which receives the images exactly as passed (N, C, H, W in [-1, 1]).

Feature spaces:

- a :class:`~ddsm.metrics.featurenet.FeatureNet` trained on the dataset (the
  default; run in float64 so that the same samples give the same FID to far
  better than 1e-6, and torchmetrics accumulates its statistics in float64);
- Inception-v3 pool features, only when the user gives a local torchvision
  ``inception_v3`` state-dict file and torchvision is importable. Nothing is
  ever downloaded. (torchvision's ImageNet weights are not the TensorFlow
  weights of published FIDs: values are comparable with each other only.)

FIDs are comparable only for the same feature net, reference split and
number of samples (FID is biased upward for small sample sets).

Reference statistics (feature sum, feature outer-product sum, count) of the
real images are computed once per (dataset fingerprint, feature-extractor
fingerprint, split) and cached in memory and on disk beside the feature net:
``<featurenet folder>/fid-reference/<data fp>-<extractor fp>-<split>.safetensors``,
written atomically. A cache file that is unreadable or for another key is
recomputed and replaced.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ddsm.checkpoint import read_tensors, save_tensors
from ddsm.data import ImageData
from ddsm.errors import DDSMError
from ddsm.metrics.featurenet import FeatureNet, is_shipped

Split = Literal["train", "holdout", "all"]
SPLITS = ("train", "holdout", "all")
REFERENCE = "ddsm.fid_reference"
CACHE_FOLDER = "fid-reference"

# (key) -> (feature sum, outer-product sum, count): shared by every FID object of this process.
_MEMORY: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


class _Features(nn.Module):
    """Adapter handed to torchmetrics: the extractor, in eval mode, at a fixed dtype, with ``num_features``."""

    def __init__(self, extractor: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.extractor = copy.deepcopy(extractor).to(dtype).eval()
        self.num_features = int(extractor.num_features)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x.to(self.dtype))


class InceptionFeatures(nn.Module):
    """torchvision Inception-v3 pool features (2048) from a local weights file; never downloads."""

    num_features = 2048
    _MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics the torchvision weights expect
    _STD = (0.229, 0.224, 0.225)

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise DDSMError(f"Inception weights file {str(path)!r} does not exist; give a local torchvision "
                            "inception_v3 state-dict file (ddsm never downloads weights) or use a feature net")
        try:
            from torchvision.models import inception_v3
        except Exception as e:  # noqa: BLE001 - a broken torchvision raises more than ImportError
            raise DDSMError(f"Inception features need torchvision, which is not importable here ({e}); "
                            "use a feature net (ddsm featurenet) instead") from None
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:  # noqa: BLE001 - unpickling and shape errors alike mean "not these weights"
            raise DDSMError(f"{str(path)!r} is not a torchvision inception_v3 state dict: {str(e).splitlines()[0]}") from None
        net.fc = nn.Identity()
        self.net = net.eval()
        self.weights_fingerprint = _file_hash(path)
        self.register_buffer("mean", torch.tensor(self._MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self._STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def fingerprint(self) -> str:
        return "inception-" + self.weights_fingerprint


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def reference_images(data: ImageData, split: Split) -> torch.Tensor:
    """The real images of ``split`` ('train', 'holdout' or 'all')."""
    if split == "train":
        x = data.train
    elif split == "holdout":
        x = data.holdout
    elif split == "all":
        x = torch.cat([data.train, data.holdout])
    else:
        raise DDSMError(f"reference split {split!r} is not one of {', '.join(SPLITS)}")
    if len(x) < 2:
        raise DDSMError(f"reference split {split!r} of dataset {data.name!r} has {len(x)} images; FID needs at least 2")
    return x


class FID:
    """FID of sample sets against fixed real reference images: ``fid(samples) -> float``.

    ``extractor`` is any module with an integer ``num_features`` mapping images
    to (N, num_features). ``key`` names the reference statistics (dataset,
    extractor, split) for the in-memory cache, ``cache_file`` for the disk cache.
    """

    def __init__(
        self,
        extractor: nn.Module,
        reference: torch.Tensor,
        *,
        key: str | None = None,
        cache_file: str | Path | None = None,
        dtype: torch.dtype = torch.float64,
        batch_size: int = 500,
    ) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        if not isinstance(getattr(extractor, "num_features", None), int):
            raise DDSMError(f"FID feature extractor {type(extractor).__name__} needs an integer `num_features` attribute")
        self.image_shape = tuple(reference.shape[1:])
        self.num_reference = len(reference)
        self.batch_size = batch_size
        self.key = key
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.metric = FrechetInceptionDistance(feature=_Features(extractor, dtype), reset_real_features=False)
        self._set_reference(self._reference_stats(reference))

    # -- reference statistics ----------------------------------------------------

    def _reference_stats(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.key is not None and self.key in _MEMORY:
            return _MEMORY[self.key]
        stats = self._read_cache()
        if stats is None:
            self._check(reference, "reference images")
            self.metric.reset()
            with torch.no_grad():
                for a in range(0, len(reference), self.batch_size):
                    self.metric.update(reference[a : a + self.batch_size], real=True)
            m = self.metric
            stats = (m.real_features_sum.clone(), m.real_features_cov_sum.clone(), m.real_features_num_samples.clone())
            self._write_cache(stats)
        if self.key is not None:
            _MEMORY[self.key] = stats
        return stats

    def _set_reference(self, stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        m = self.metric
        m.real_features_sum, m.real_features_cov_sum, m.real_features_num_samples = (t.clone() for t in stats)
        self.num_reference = int(stats[2])

    def _read_cache(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if self.cache_file is None or self.key is None or not self.cache_file.is_file():
            return None
        try:
            tensors, header = read_tensors(self.cache_file)
        except DDSMError:
            return None  # unreadable: recompute and replace it
        if header.get("kind") != REFERENCE or header.get("key") != self.key:
            return None
        return tensors["sum"], tensors["cov_sum"], tensors["n"].reshape(())

    def _write_cache(self, stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        if self.cache_file is None or self.key is None:
            return
        try:
            save_tensors(self.cache_file, {"sum": stats[0], "cov_sum": stats[1], "n": stats[2].reshape(1)},
                         {"kind": REFERENCE, "key": self.key, "num_features": int(stats[0].numel())})
        except OSError as e:
            # A read-only folder only costs recomputation next time; it must not stop an evaluation.
            warnings.warn(f"could not cache FID reference statistics at {self.cache_file}: {e}", stacklevel=3)

    # -- scoring --------------------------------------------------------------------

    def _check(self, x: torch.Tensor, what: str) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise DDSMError(f"{what} have shape {tuple(x.shape)}; this FID takes (N, {', '.join(map(str, self.image_shape))})")
        if len(x) < 2:
            raise DDSMError(f"{what}: FID needs at least 2 images, got {len(x)}")

    @torch.no_grad()
    def fid(self, samples: torch.Tensor) -> float:
        """FID of ``samples`` (N, C, H, W in [-1, 1]) against the reference; deterministic for the same input."""
        self._check(samples, "samples")
        if not torch.isfinite(samples).all():
            raise DDSMError(f"samples contain {int((~torch.isfinite(samples)).sum())} NaN or inf values; FID is undefined")
        # Real images live in [-1, 1]; so does any sample once written as an image.
        samples = samples.clamp(-1, 1)
        self.metric.reset()  # keeps the reference statistics (reset_real_features=False)
        for a in range(0, len(samples), self.batch_size):
            self.metric.update(samples[a : a + self.batch_size], real=False)
        # Rounding can take the distance of a set to itself a hair below zero.
        return max(0.0, float(self.metric.compute()))

    __call__ = fid

    # -- construction from a dataset ------------------------------------------------

    @classmethod
    def for_data(
        cls,
        data: ImageData,
        *,
        featurenet: FeatureNet | str | Path | None = None,
        inception: str | Path | None = None,
        split: Split = "train",
        cache_dir: str | Path | None = None,
        batch_size: int = 500,
    ) -> "FID":
        """FID against ``data``'s ``split`` in the space of a feature net (object or file) or local Inception weights.

        The disk cache goes to ``cache_dir``, else beside the feature net or weights file (none for an unsaved net).
        """
        if (featurenet is None) == (inception is None):
            raise DDSMError("give exactly one FID feature space: a feature net (file or object) or an Inception weights file")
        reference = reference_images(data, split)
        if inception is not None:
            extractor: nn.Module = InceptionFeatures(inception)
            fp, home, dtype = extractor.fingerprint(), Path(inception).parent, torch.float32
        else:
            if isinstance(featurenet, (str, Path)):
                featurenet = FeatureNet.load(featurenet, data)
            else:
                featurenet.check_data(data)
            extractor, fp, dtype = featurenet, featurenet.fingerprint(), torch.float64
            # a shipped net lives in the installed package: its reference statistics stay in memory
            home = featurenet.path.parent if featurenet.path is not None and not is_shipped(featurenet.path) else None
            featurenet.check_images(reference, "reference images")
        key = f"{data.fingerprint()}-{fp}-{split}"
        folder = Path(cache_dir) if cache_dir is not None else (home / CACHE_FOLDER if home is not None else None)
        cache_file = folder / f"{key}.safetensors" if folder is not None else None
        return cls(extractor, reference, key=key, cache_file=cache_file, dtype=dtype, batch_size=batch_size)


def clear_memory_cache() -> None:
    """Forget the in-memory reference statistics (the disk cache stays)."""
    _MEMORY.clear()
