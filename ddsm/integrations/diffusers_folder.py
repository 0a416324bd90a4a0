"""Read a user's diffusers ``UNet2DModel`` or ``DiTTransformer2DModel`` folder offline, and refuse what ddsm
cannot slim, in one line each.

This is the entry check of "bring your own model": everything
``ddsm slim --from-diffusers FOLDER`` needs from the folder, checked before
any work (``model_config_for`` then makes the supernet's model config). A folder is a model folder (``config.json`` +
``diffusion_pytorch_model.safetensors``) or a pipeline folder holding one
under ``unet/`` or ``transformer/``; the noise schedule comes from ``scheduler_config.json`` in
the folder or under ``scheduler/``.

Refused, naming the value and what is valid:

- anything that is not an existing local folder (a hub id among them:
  ddsm never downloads);
- a config that is not a ``UNet2DModel`` or ``DiTTransformer2DModel``, or
  that uses a block, time embedding, class embedding or norm ddsm does not
  support yet (a DiT's: :mod:`ddsm.integrations.diffusers_dit_folder`);
- a pipeline class ddsm does not take, a latent pipeline's autoencoder that
  does not fit its denoiser, and a hub id in any config
  (:mod:`ddsm.integrations.latent_folder`; a latent pipeline, ``vae/`` or
  ``vqvae/`` beside the denoiser, is slimmed in latent space);
- a missing weights file, or only a pickle ``.bin`` (refused: a pickle can
  run code when loaded, and safetensors is diffusers' own default);
- weights whose names or shapes differ from what the config builds;
- a scheduler whose prediction type is not ``epsilon``, ``v_prediction`` or ``sample``;
- a value ddsm reads that is of the wrong type, not finite or out of range
  (:class:`UNetValues`, :class:`SchedulerValues`: a side of 0 or above
  :data:`~ddsm.limits.MAX_IMAGE_SIDE`, NaN betas, T = 1, ...), before diffusers
  or torch sees it; and a JSON file over the config reader's size or nesting
  limits (:func:`ddsm.io.read_json`).

The betas are diffusers' own (``DDPMScheduler.from_config``), not
re-derived, so every ``beta_schedule`` diffusers knows gives the user's
exact schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import ConfigDict, Field, model_validator
from safetensors import safe_open
from safetensors.torch import load_file

from ddsm.config import (DEFAULT_WIDTHS, DiffusersModelConfig, DiffusionConfig, ModelConfig, UNetConfig, _Frozen,
                         check_width_set, validate)
from ddsm.config.schema import MAX_TIMESTEPS
from ddsm.diffusion.noise import make_betas
from ddsm.errors import DDSMError
from ddsm.io import read_json, weights_sha256
from ddsm.limits import MAX_CHANNELS, MAX_CONFIG_BYTES, MAX_IMAGE_SIDE
from ddsm.integrations.diffusers import import_diffusers
from ddsm.integrations.latent_folder import PIPELINES, AutoencoderFolder, check_pipeline, read_autoencoder
from ddsm.nn.diffusers_unet import SlimUNet2DModel, attention_sides

#: block types of UNet2DModel that ddsm can slim (the ResNet and attention blocks)
DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")
MID_BLOCKS = ("UNetMidBlock2D", None)
PREDICTIONS = ("epsilon", "v_prediction", "sample")  # every sampler and evaluator converts them (ddsm.diffusion.prediction)
WEIGHTS = "diffusion_pytorch_model.safetensors"
#: config values ddsm supports, per key (anything else is refused by name)
SUPPORTED = {
    "time_embedding_type": ("positional",),
    "class_embed_type": (None,),
    "resnet_time_scale_shift": ("default",),
    "downsample_type": ("conv",),
    "upsample_type": ("conv",),
    "act_fn": ("silu",),
    "center_input_sample": (False,),
    "downsample_padding": (1,),  # 0 makes diffusers pad right and bottom first: not mirrored yet
}


@dataclass(frozen=True)
class DiffusersFolder:
    """A checked diffusers UNet2DModel or DiTTransformer2DModel folder: its config, weights file and noise schedule."""

    folder: Path  # the folder holding config.json and the weights
    config: dict[str, Any]  # the model's config.json
    weights: Path  # the safetensors weights file
    betas: torch.Tensor  # (T,) float64, diffusers' own betas for the scheduler config
    prediction_type: str  # what the model outputs: 'epsilon', 'v_prediction' or 'sample'
    clip_sample: bool  # whether the scheduler clips the predicted clean image
    scheduler_config: dict[str, Any]
    autoencoder: AutoencoderFolder | None = None  # a latent pipeline's VAE or VQ model; None: pixel space
    pipeline_class: str | None = None  # model_index.json's pipeline class, when the folder is a pipeline

    @property
    def is_dit(self) -> bool:
        """Whether the denoiser is a DiTTransformer2DModel (else a UNet2DModel)."""
        return self.config.get("_class_name") == "DiTTransformer2DModel"

    @property
    def num_timesteps(self) -> int:
        """The training timesteps T of the noise schedule."""
        return len(self.betas)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    # the config reader's limits (size, nesting): a folder's JSON is the user's config, not a file ddsm wrote
    doc = read_json(path, what, max_bytes=MAX_CONFIG_BYTES)
    if not isinstance(doc, dict):
        raise DDSMError(f"{what} {str(path)!r} must hold a JSON object, not {type(doc).__name__}")
    return doc


_PositiveInt = Annotated[int, Field(ge=1)]


class _Values(_Frozen):
    """The values of a user's JSON that ddsm reads, checked (strict types, finite, in range) before diffusers or
    torch sees them; other keys pass through untouched for diffusers' own checks."""

    model_config = ConfigDict(extra="allow", strict=True)  # merged over the config base's (finite floats)


class UNetValues(_Values):
    """What a UNet2DModel ``config.json`` must hold for ddsm to build, slim and cost it."""

    sample_size: int = Field(ge=1, le=MAX_IMAGE_SIDE)  # one square side (diffusers also allows a pair: not ddsm)
    in_channels: int = Field(3, ge=1, le=MAX_CHANNELS)
    out_channels: int = Field(3, ge=1, le=MAX_CHANNELS)
    block_out_channels: list[Annotated[int, Field(ge=1, le=MAX_CHANNELS)]] = Field(min_length=1, max_length=16)
    layers_per_block: int = Field(2, ge=1, le=32)
    norm_num_groups: _PositiveInt | None = 32
    norm_eps: float = Field(1e-5, gt=0.0, lt=1.0)
    attention_head_dim: _PositiveInt | None = 8
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class DiTValues(_Values):
    """What a DiTTransformer2DModel ``config.json`` must hold for ddsm to build, slim and cost it."""

    sample_size: int = Field(32, ge=1, le=MAX_IMAGE_SIDE)  # the input's side (a latent's, in a latent pipeline)
    in_channels: int = Field(4, ge=1, le=MAX_CHANNELS)
    out_channels: int | None = Field(None, ge=1, le=MAX_CHANNELS)
    patch_size: int = Field(2, ge=1, le=64)
    num_attention_heads: int = Field(16, ge=1, le=256)
    attention_head_dim: int = Field(72, ge=1, le=1024)
    num_layers: int = Field(28, ge=1, le=256)
    num_embeds_ada_norm: int | None = Field(1000, ge=1, le=100_000)


class SchedulerValues(_Values):
    """What a ``scheduler_config.json`` must hold for ddsm to rebuild its noise schedule."""

    num_train_timesteps: int = Field(1000, gt=1, le=MAX_TIMESTEPS)
    beta_start: float = Field(1e-4, gt=0.0, lt=1.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _increasing(self) -> "SchedulerValues":
        if self.beta_schedule in ("linear", "scaled_linear") and self.beta_start > self.beta_end:
            raise ValueError(f"beta_start ({self.beta_start:g}) exceeds beta_end ({self.beta_end:g}); betas grow "
                             "with t")
        return self


def _model_folder(spec: str | Path) -> tuple[Path, Path | None]:
    """(the denoiser's folder, the pipeline folder holding it or None)."""
    path = Path(spec)
    if not path.is_dir():
        hint = " (it looks like a hub id: download the model yourself; ddsm never downloads)" \
            if isinstance(spec, str) and spec.count("/") == 1 and not path.exists() else ""
        raise DDSMError(f"--from-diffusers {str(spec)!r} is not a local folder{hint}; give a folder with config.json "
                        f"and {WEIGHTS}, or a pipeline folder with unet/")
    for sub in ("unet", "transformer"):
        if not (path / "config.json").is_file() and (path / sub / "config.json").is_file():
            return path / sub, path
    if not (path / "config.json").is_file():
        raise DDSMError(f"{str(path)!r} is not a diffusers model folder: no config.json (nor unet/ or "
                        "transformer/config.json)")
    return path, None


def _check_config(config: dict[str, Any], source: str) -> None:
    name = config.get("_class_name")
    if name is None:  # e.g. a ddsm run folder's config.json
        raise DDSMError(f"{source} is not a diffusers model config (it has no _class_name); give a folder saved by "
                        "UNet2DModel.save_pretrained")
    if name == "DiTTransformer2DModel":
        from ddsm.integrations.diffusers_dit_folder import check_dit_folder_config

        return check_dit_folder_config(config, source)
    if name != "UNet2DModel":
        raise DDSMError(f"{source} is a {name!r}; ddsm slims diffusers' UNet2DModel and DiTTransformer2DModel")
    for key, valid in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        for block in config.get(key) or ():
            if block not in valid:
                raise DDSMError(f"unsupported diffusers block {block!r} in {key} of {source}; supported: "
                                f"{', '.join(valid)}")
    mid = config.get("mid_block_type", "UNetMidBlock2D")
    if mid not in MID_BLOCKS:
        raise DDSMError(f"unsupported diffusers block {mid!r} in mid_block_type of {source}; supported: UNetMidBlock2D")
    for key, valid in SUPPORTED.items():
        if key in config and config[key] not in valid:
            raise DDSMError(f"{key} {config[key]!r} of {source} is not supported yet; supported: "
                            f"{', '.join(repr(v) for v in valid)}")


def _scheduler(folder: Path) -> dict[str, Any]:
    for base in (folder, folder.parent / "scheduler", folder / "scheduler"):
        path = base / "scheduler_config.json"
        if path.is_file():
            return _read_json(path, "scheduler config")
    raise DDSMError(f"no scheduler_config.json beside {str(folder)!r} (nor under scheduler/); ddsm takes the noise "
                    "schedule from it: save the training scheduler with scheduler.save_config(folder)")


def _check_weights(config: dict[str, Any], weights: Path, source: str) -> None:
    diffusers = import_diffusers()
    try:
        cls = getattr(diffusers, config["_class_name"])
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in cls.from_config(config).state_dict().items()}
    except Exception as e:  # diffusers' own validation of the config
        raise DDSMError(f"{source} does not build a {config['_class_name']} ({type(e).__name__}: {e})") from None
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise DDSMError(f"weights {str(weights)!r} are not a readable safetensors file ({type(e).__name__})") from None
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        first = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise DDSMError(f"weights {str(weights)!r} do not match {source}: {len(missing)} missing, {len(extra)} "
                        f"unexpected tensors ({first})")
    for k, shape in expected.items():
        if found[k] != shape:
            raise DDSMError(f"weights {str(weights)!r} do not match {source}: {k!r} has shape {list(found[k])}, "
                            f"the config builds {list(shape)}")


def read_diffusers_folder(spec: str | Path) -> DiffusersFolder:
    """Check a diffusers UNet2DModel folder (or a pipeline folder with ``unet/``) offline; one-line DDSMError."""

    folder, pipeline = _model_folder(spec)
    pipeline_class = check_pipeline(pipeline) if pipeline is not None else None
    if pipeline_class is not None and PIPELINES[pipeline_class][0] != folder.name:
        raise DDSMError(f"{str(pipeline)!r} is a {pipeline_class}, whose denoiser is {PIPELINES[pipeline_class][0]}/,"
                        f" not {folder.name}/")
    source = f"config {str(folder / 'config.json')!r}"
    config = _read_json(folder / "config.json", "model config")
    _check_config(config, source)
    if config["_class_name"] == "UNet2DModel":  # a DiT's values were checked with its config
        validate(UNetValues, config, source=f"model {source}")
    weights = folder / WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        if pickles:
            raise DDSMError(f"{str(folder)!r} holds only pickle weights ({pickles[0]}); ddsm loads safetensors only: "
                            f"convert them (UNet2DModel.from_pretrained(folder).save_pretrained(folder)) to {WEIGHTS}")
        raise DDSMError(f"{str(folder)!r} has no weights file {WEIGHTS}")
    sched = _scheduler(folder)
    validate(SchedulerValues, sched, source=f"scheduler config of {str(folder)!r}")
    prediction = sched.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise DDSMError(f"scheduler prediction_type {prediction!r} is not supported yet; supported: "
                        f"{', '.join(PREDICTIONS)}")
    _check_weights(config, weights, source)
    autoencoder = read_autoencoder(pipeline, config, pipeline_class) if pipeline is not None else None
    diffusers = import_diffusers()
    try:
        ddpm = diffusers.DDPMScheduler.from_config(sched)
    except Exception as e:  # an unknown beta_schedule, among others
        raise DDSMError(f"scheduler config of {str(folder)!r} is not usable ({type(e).__name__}: {e})") from None
    return DiffusersFolder(folder=folder, config=config, weights=weights, betas=ddpm.betas.double(),
                           prediction_type=prediction, clip_sample=bool(sched.get("clip_sample", True)),
                           scheduler_config=sched, autoencoder=autoencoder, pipeline_class=pipeline_class)


def load_slim_model(spec: str | Path | DiffusersFolder, widths=DEFAULT_WIDTHS):
    """The folder's model as a slimmable network with the original weights: a UNet2DModel's mirror
    (``ddsm.nn.diffusers_unet``) or a DiTTransformer2DModel's (``ddsm.nn.diffusers_dit``).

    At width 1 it computes the original model's function; ``widths`` must keep whole GroupNorm groups and
    attention heads. Weights are read with safetensors only.
    """

    info = spec if isinstance(spec, DiffusersFolder) else read_diffusers_folder(spec)
    if info.is_dit:
        from ddsm.nn.diffusers_dit import SlimDiTTransformer2DModel

        net = SlimDiTTransformer2DModel(info.config, widths=widths)
    else:
        net = SlimUNet2DModel(info.config, widths=widths)
    net.load_state_dict(load_file(str(info.weights)), strict=True)  # names and shapes were checked on reading
    return net.eval()


def autoencoder_record(info: DiffusersFolder) -> dict[str, Any] | None:
    """``DiffusersModelConfig.autoencoder`` of the folder: None for a pixel-space model."""
    return None if info.autoencoder is None else info.autoencoder.record()


#: diffusers beta schedules with a ddsm equivalent (the samplers and the search run on ddsm's noise schedule)
BETA_SCHEDULES = {"linear": "linear", "squaredcos_cap_v2": "cosine"}


def diffusion_config_for(info: DiffusersFolder):
    """ddsm's :class:`~ddsm.config.DiffusionConfig` with exactly the folder's betas (checked to 1e-6), or refuse."""

    sched = info.scheduler_config
    kind = sched.get("beta_schedule", "linear")
    if sched.get("trained_betas") is not None or kind not in BETA_SCHEDULES:
        shown = "trained_betas" if sched.get("trained_betas") is not None else repr(kind)
        raise DDSMError(f"scheduler beta_schedule {shown} of {str(info.folder)!r} is not supported yet; supported: "
                        f"{', '.join(BETA_SCHEDULES)}")
    config = DiffusionConfig(num_timesteps=info.num_timesteps, beta_schedule=BETA_SCHEDULES[kind],
                             prediction_type=info.prediction_type, latent=info.autoencoder is not None,
                             **({"beta_start": float(sched.get("beta_start", 1e-4)),
                                 "beta_end": float(sched.get("beta_end", 0.02))} if kind == "linear" else {}))
    gap = float((make_betas(config) - info.betas).abs().max())
    if gap > 1e-6:  # diffusers' betas are float32: anything beyond its rounding is another schedule
        raise DDSMError(f"scheduler of {str(info.folder)!r}: ddsm's {config.beta_schedule} betas differ from "
                        f"diffusers' by {gap:.2g}; this schedule is not supported yet")
    return config


def model_config_for(info: DiffusersFolder, widths=DEFAULT_WIDTHS, freeze_full: bool = True,
                     null_label: bool = False):
    """The :class:`~ddsm.config.ModelConfig` of the supernet made from the folder (``ddsm slim``).

    A class-conditional model (``num_class_embeds`` N) takes N classes, or N - 1 with ``null_label`` (its last
    embedding is the unconditional label: classifier-free guidance and label dropout then work as in ddsm's own models).
    """

    if info.is_dit:
        from ddsm.integrations.diffusers_dit_folder import dit_model_config

        if null_label:
            raise DDSMError("--null-label is for class-conditional UNets; a DiT's null label is its class "
                            "embedding table's last row already")
        return dit_model_config(info, widths, freeze_full, diffusion_config_for(info))
    unet = {k: v for k, v in info.config.items() if not k.startswith("_")}
    n = unet.get("num_class_embeds")
    if null_label and n is None:
        raise DDSMError(f"--null-label last is for class-conditional models; {str(info.folder)!r} has no "
                        "num_class_embeds (it is unconditional)")
    with torch.device("meta"):
        SlimUNet2DModel(unet, widths=widths)  # refuses widths that split a GroupNorm group or a head, by name
    diffusers = validate(DiffusersModelConfig, {"unet": unet, "weights_sha256": weights_sha256(info.weights),
                                                "freeze_full": freeze_full, "null_label": null_label,
                                                "autoencoder": autoencoder_record(info)},
                         source=f"model {str(info.folder)!r}")
    return ModelConfig(unet=recorded_unet_config(unet, widths, diffusers.num_classes),
                       diffusion=diffusion_config_for(info), diffusers=diffusers)


def recorded_unet_config(unet: dict[str, Any], widths, num_classes: int = 0) -> UNetConfig:
    """What a slimmed model's ``ModelConfig.unet`` records: its image size, channels, widths and level structure.

    The backbone (:class:`~ddsm.nn.slimmed.SlimmedUNet`) reads only the widths
    from it; its shapes and memory estimate come from the diffusers config
    itself. The other fields (levels as base × multiplier, the attended sides,
    ``group_channels`` 1) are kept because every slimmed supernet's
    fingerprint was computed over them.
    """

    size = unet.get("sample_size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise DDSMError(f"sample_size {size!r} is not supported; ddsm needs one square side (an int)")
    channels = [int(c) for c in unet["block_out_channels"]]
    base = math.gcd(*channels)
    attn = tuple(attention_sides(unet))
    return UNetConfig(image_size=size, in_channels=unet.get("in_channels", 3), base_channels=base,
                      channel_mults=tuple(c // base for c in channels), num_res_blocks=unet.get("layers_per_block", 2),
                      attn_resolutions=attn, widths=check_width_set(tuple(float(w) for w in widths)),
                      group_channels=1, num_classes=num_classes)
