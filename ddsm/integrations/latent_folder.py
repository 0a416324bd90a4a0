"""A diffusers pipeline folder read offline: which pipeline it is, its autoencoder (a latent pipeline), no hub ids.

:func:`ddsm.integrations.diffusers_folder.read_diffusers_folder` calls
:func:`check_pipeline` on a pipeline folder (one holding ``unet/`` or
``transformer/``) before it reads the denoiser, and :func:`read_autoencoder`
after. A latent pipeline (``DiTPipeline``: ``transformer/`` + ``vae/``
``AutoencoderKL``; ``LDMPipeline``: ``unet/`` + ``vqvae/`` ``VQModel``) is
slimmed in latent space: the autoencoder's config and weights go into the
supernet (``DiffusersModelConfig.autoencoder``, :mod:`ddsm.nn.autoencoder`).

Refused, each in one line naming the value and what is valid: a pipeline
class ddsm does not take (``model_index.json``), an autoencoder of another
class or without safetensors weights, latents whose channels or side the
denoiser does not take, an autoencoder setting the pipelines do not use
(``shift_factor``, ``latents_mean``), and a hub id in any of the folder's
configs (a ``*_name_or_path`` or ``*repo*`` value of the form ``owner/name``
that is not a local path: ddsm never downloads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddsm.errors import DDSMError
from ddsm.io import read_json
from ddsm.limits import MAX_CONFIG_BYTES
from ddsm.nn.autoencoder import CLASSES

#: pipeline classes ddsm takes, with the denoiser and autoencoder folders each holds
PIPELINES = {"DDPMPipeline": ("unet", None), "DDIMPipeline": ("unet", None), "LDMPipeline": ("unet", "vqvae"),
             "DiTPipeline": ("transformer", "vae")}
WEIGHTS = "diffusion_pytorch_model.safetensors"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SOURCE_KEY = re.compile(r"name_or_path|repo|pretrained", re.IGNORECASE)
#: AutoencoderKL settings that DiTPipeline and LDMPipeline ignore (a latent made with them would decode wrongly)
UNUSED_SETTINGS = ("shift_factor", "latents_mean", "latents_std")


@dataclass(frozen=True)
class AutoencoderFolder:
    """A checked ``vae/`` or ``vqvae/`` folder of a latent pipeline."""

    kind: str  # 'vae' (AutoencoderKL) or 'vqvae' (VQModel)
    folder: Path
    config: dict[str, Any]  # its config.json
    weights: Path  # its safetensors weights

    def record(self) -> dict[str, Any]:
        """What ``DiffusersModelConfig.autoencoder`` records: kind, config (private keys dropped), weights hash."""
        from ddsm.io import weights_sha256

        return {"kind": self.kind, "config": {k: v for k, v in self.config.items() if not k.startswith("_")},
                "weights_sha256": weights_sha256(self.weights)}


def _json(path: Path, what: str) -> dict[str, Any]:
    doc = read_json(path, what, max_bytes=MAX_CONFIG_BYTES)
    if not isinstance(doc, dict):
        raise DDSMError(f"{what} {str(path)!r} must hold a JSON object, not {type(doc).__name__}")
    return doc


def check_no_hub_ids(doc: Any, source: str, key: str = "") -> None:
    """Refuse a value naming a hub repository (``owner/name``, not a local path) under a source-like key."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            check_no_hub_ids(v, source, str(k))
    elif isinstance(doc, list):
        for v in doc:
            check_no_hub_ids(v, source, key)
    elif isinstance(doc, str) and _SOURCE_KEY.search(key) and _HUB_ID.match(doc) and not Path(doc).exists():
        raise DDSMError(f"{key} {doc!r} in {source} is a hub id; ddsm works offline and never downloads: download "
                        "the model yourself and give the local folder")


def check_pipeline(pipeline: Path) -> str | None:
    """The pipeline class named by ``model_index.json`` (None when the folder has none), refused unless ddsm takes
    it; every JSON config in the folder is checked for hub ids."""
    for path in sorted([pipeline / "model_index.json", *pipeline.glob("*/config.json"),
                        *pipeline.glob("*/scheduler_config.json")]):
        if path.is_file():
            check_no_hub_ids(_json(path, "pipeline config"), repr(str(path)))
    index = pipeline / "model_index.json"
    if not index.is_file():
        return None
    name = _json(index, "pipeline index").get("_class_name")
    if name not in PIPELINES:
        raise DDSMError(f"pipeline class {name!r} of {str(index)!r} is not supported; supported: "
                        f"{', '.join(PIPELINES)}")
    return name


def read_autoencoder(pipeline: Path, denoiser: dict[str, Any], pipeline_class: str | None) -> AutoencoderFolder | None:
    """The pipeline's checked autoencoder, or None for a pixel-space pipeline."""
    found = [kind for kind in CLASSES if (pipeline / kind).is_dir()]
    if not found:
        if pipeline_class in ("LDMPipeline", "DiTPipeline"):
            raise DDSMError(f"{str(pipeline)!r} is a {pipeline_class} without its {PIPELINES[pipeline_class][1]}/ "
                            "folder; a latent pipeline needs its autoencoder")
        return None
    if len(found) > 1:
        raise DDSMError(f"{str(pipeline)!r} holds both vae/ and vqvae/; a pipeline has one autoencoder")
    kind = found[0]
    folder = pipeline / kind
    if pipeline_class is not None and PIPELINES[pipeline_class][1] not in (None, kind):
        raise DDSMError(f"{str(pipeline)!r} is a {pipeline_class}, which takes {PIPELINES[pipeline_class][1]}/, "
                        f"not {kind}/")
    if not (folder / "config.json").is_file():
        raise DDSMError(f"{str(folder)!r} has no config.json; save the autoencoder with save_pretrained")
    config = _json(folder / "config.json", "autoencoder config")
    if config.get("_class_name") != CLASSES[kind]:
        raise DDSMError(f"{str(folder / 'config.json')!r} is a {config.get('_class_name')!r}; {kind}/ holds a "
                        f"{CLASSES[kind]}")
    for key in UNUSED_SETTINGS:
        if config.get(key) is not None:
            raise DDSMError(f"{key} {config[key]!r} of {str(folder)!r} is not supported; DiTPipeline and "
                            "LDMPipeline scale latents by scaling_factor only (give null)")
    weights = folder / WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        raise DDSMError(f"autoencoder {str(folder)!r} has no weights file {WEIGHTS}" +
                        (f" (only the pickle {pickles[0]}: ddsm loads safetensors only)" if pickles else ""))
    _check_shapes(kind, folder, config, denoiser)
    from ddsm.integrations.diffusers_folder import _check_weights

    _check_weights(config, weights, f"config {str(folder / 'config.json')!r}")
    return AutoencoderFolder(kind=kind, folder=folder, config=config, weights=weights)


def _check_shapes(kind: str, folder: Path, config: dict[str, Any], denoiser: dict[str, Any]) -> None:
    from ddsm.config import AutoencoderConfig

    a = AutoencoderConfig(kind=kind, config=config, weights_sha256="")
    for key, value in (("sample_size", config.get("sample_size", 32)), ("latent_channels", a.latent_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DDSMError(f"{key} {value!r} of {str(folder)!r} must be a positive int")
    channels, side = denoiser.get("in_channels"), denoiser.get("sample_size")
    if channels != a.latent_channels:
        raise DDSMError(f"the denoiser takes in_channels {channels!r}, but {kind}/ makes latents of "
                        f"{a.latent_channels} channels (latent_channels); they must agree")
    if a.image_size % a.downscale or side != a.image_size // a.downscale:
        raise DDSMError(f"the denoiser takes sample_size {side!r}, but {kind}/ makes latents of side "
                        f"{a.image_size / a.downscale:g} (its sample_size {a.image_size} / {a.downscale}); they "
                        "must agree")
