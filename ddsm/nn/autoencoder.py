"""A latent pipeline's autoencoder inside a slimmed supernet: encode the training data once, decode every sample.

A diffusers ``DiTPipeline`` (``AutoencoderKL``) or ``LDMPipeline``
(``VQModel``) denoises latents, not pixels. :class:`LatentCodec` holds the
user's autoencoder, frozen, in the supernet itself (so a supernet file is
self-contained) and maps between the two spaces exactly as those pipelines do:

- ``encode``: images in [-1, 1] → latents × ``scaling_factor``. An
  ``AutoencoderKL`` gives its posterior's mode (its mean): training latents are
  then a function of the data alone, so they are encoded once and cached; a
  ``VQModel`` gives its encoder's output before quantisation (its decoder quantises);
- ``decode``: latents / ``scaling_factor`` → the decoder's images, clamped to
  [-1, 1] (the pipelines clamp too, after mapping to [0, 1]).

The denoiser never calls it; samplers return latents and
:func:`ddsm.nn.backbone.to_images` decodes them before any metric, file or feature.
"""

from __future__ import annotations

import torch
from torch import nn

from ddsm.config import AutoencoderConfig

#: the diffusers class of each kind, as the pipeline folders name them
CLASSES = {"vae": "AutoencoderKL", "vqvae": "VQModel"}


class LatentCodec(nn.Module):
    """The user's frozen autoencoder (``config.kind``) with the pipelines' latent scaling."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        from ddsm.integrations.diffusers import import_diffusers

        self.config = config
        cls = getattr(import_diffusers(), CLASSES[config.kind])
        self.model = cls.from_config(config.config).requires_grad_(False).eval()  # weights: the supernet file's

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] → (N, c, h, w) scaled latents, deterministic."""
        if self.config.kind == "vae":
            z = self.model.encode(images).latent_dist.mode()
        else:
            z = self.model.encode(images).latents
        return z * self.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, c, h, w) scaled latents → (N, C, H, W) images in [-1, 1]."""
        x = self.model.decode(latents.to(next(self.model.parameters()).dtype) / self.config.scaling_factor).sample
        return x.clamp(-1.0, 1.0)

    def train(self, mode: bool = True) -> "LatentCodec":
        return super().train(False)  # frozen: dropout and batch statistics never change


def encode_in_batches(codec: LatentCodec, images: torch.Tensor, batch_size: int = 64,
                      progress: bool = False) -> torch.Tensor:
    """``codec.encode`` over ``images`` (on the CPU) ``batch_size`` at a time, on the codec's device; CPU float32."""
    from tqdm.auto import tqdm

    device = next(codec.parameters()).device
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="encoding latents", unit="batch", disable=not progress):
        out.append(codec.encode(images[start:start + batch_size].to(device)).float().cpu())
    return torch.cat(out)
