"""The autoencoder section of a slimmed latent pipeline's model config (``DiffusersModelConfig.autoencoder``)."""

from __future__ import annotations

from typing import Any, Literal

from ddsm.config.base import _Frozen


class AutoencoderConfig(_Frozen):
    """The autoencoder of a latent pipeline (``vae/``: ``AutoencoderKL``, ``vqvae/``: ``VQModel``): the denoiser works
    on its latents, scaled by ``scaling_factor`` as diffusers' ``DiTPipeline`` and ``LDMPipeline`` scale them, and
    every sample is decoded by it before any metric or file (``ddsm.nn.autoencoder``)."""

    kind: Literal["vae", "vqvae"]  # the pipeline's folder name: vae (AutoencoderKL) or vqvae (VQModel)
    config: dict[str, Any]  # its config.json (private '_' keys dropped)
    weights_sha256: str  # hash of its weights file: the supernet file carries these weights, frozen

    @property
    def downscale(self) -> int:
        """Pixels per latent along a side: 2 ** (encoder blocks - 1)."""
        return 2 ** (len(self.config.get("block_out_channels", (64,))) - 1)

    @property
    def image_size(self) -> int:
        """The decoded images' side."""
        return int(self.config.get("sample_size", 32))

    @property
    def image_channels(self) -> int:
        """The decoded images' channels."""
        return int(self.config.get("out_channels", 3))

    @property
    def latent_channels(self) -> int:
        return int(self.config.get("latent_channels", 4 if self.kind == "vae" else 3))

    @property
    def scaling_factor(self) -> float:
        return float(self.config.get("scaling_factor", 0.18215))
