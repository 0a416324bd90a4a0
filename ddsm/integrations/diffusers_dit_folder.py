"""A user's diffusers ``DiTTransformer2DModel`` folder: its checks and the supernet's model config.

:func:`ddsm.integrations.diffusers_folder.read_diffusers_folder` reads the
folder (weights, scheduler, offline) and calls :func:`check_dit_folder_config`
on a DiT's ``config.json``; :func:`dit_model_config` then makes the model
config ``ddsm slim`` trains: the diffusers config as the architecture, and a
``dit`` section recording what the samplers, the cost model and the search
read (sample size, channels, patch, heads, depth, classes, widths).
"""

from __future__ import annotations

from typing import Any

import torch

from ddsm.config import DiffusersModelConfig, DiTConfig, ModelConfig, validate
from ddsm.errors import DDSMError
from ddsm.io import weights_sha256
from ddsm.nn.diffusers_dit import check_dit_config


def check_dit_folder_config(config: dict[str, Any], source: str) -> None:
    """One-line DDSMError for a DiT config ddsm cannot mirror (a setting, a value's type or range, a shape)."""
    try:
        check_dit_config(config)
    except DDSMError as e:
        raise DDSMError(f"{e} ({source})") from None
    from ddsm.integrations.diffusers_folder import DiTValues  # that module imports this one when it reads a DiT

    validate(DiTValues, config, source=f"model {source}")
    size, p = config.get("sample_size", 32), config.get("patch_size", 2)
    if size % p:
        raise DDSMError(f"patch_size {p} does not divide sample_size {size} ({source})")
    out = config.get("out_channels") or config.get("in_channels", 4)
    if out not in (config.get("in_channels", 4), 2 * config.get("in_channels", 4)):
        raise DDSMError(f"out_channels {out} of {source} is not supported; supported: in_channels (ε) or twice it "
                        "(ε and a learned variance)")


def dit_model_config(info, widths, freeze_full: bool, diffusion) -> ModelConfig:
    """The :class:`~ddsm.config.ModelConfig` of the supernet made from a DiT folder (``ddsm slim``)."""
    from ddsm.nn.diffusers_dit import SlimDiTTransformer2DModel

    transformer = {k: v for k, v in info.config.items() if not k.startswith("_")}
    with torch.device("meta"):
        mirror = SlimDiTTransformer2DModel(transformer, widths=widths)  # refuses widths that keep no head
    geometry = DiTConfig.model_validate({
        "image_size": mirror.pos_embed.height * mirror.patch_size, "in_channels": mirror.in_channels,
        "patch_size": mirror.patch_size, "hidden_size": mirror.heads * mirror.head_dim,
        "depth": len(mirror.transformer_blocks), "num_heads": mirror.heads,
        "mlp_ratio": mirror.mlp_hidden / (mirror.heads * mirror.head_dim), "num_classes": mirror.num_classes,
        "widths": tuple(widths)})
    from ddsm.integrations.diffusers_folder import autoencoder_record

    diffusers = validate(DiffusersModelConfig, {"transformer": transformer, "freeze_full": freeze_full,
                                                "weights_sha256": weights_sha256(info.weights),
                                                "autoencoder": autoencoder_record(info)},
                         source=f"model {str(info.folder)!r}")
    return ModelConfig(dit=geometry, diffusion=diffusion, diffusers=diffusers)
