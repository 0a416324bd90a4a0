"""Train the latent worked example's "user pipeline": a small diffusers AutoencoderKL and a class-conditional
DiTTransformer2DModel on its latents of the built-in MNIST digits, saved as a DiTPipeline folder.

This stands in for a latent pipeline a user already has. It is trained with diffusers' own components only, as in
diffusers' training examples: ``AutoencoderKL`` (reconstruction MSE plus a small KL term on its posterior),
``DiTTransformer2DModel`` (its label embedding drops labels to the null label at ``class_dropout_prob``, 0.1),
``DDPMScheduler.add_noise``, an ε-MSE loss, AdamW with ``get_cosine_schedule_with_warmup`` and ``EMAModel``.
``scaling_factor`` is set, as for Stable Diffusion's VAE, to 1 / (the standard deviation of the training latents).
It is not part of ddsm: ddsm meets the result only as a folder (``ddsm slim --from-diffusers OUT``).

Output: ``OUT/{transformer,vae,scheduler}`` and ``OUT/model_index.json`` (``DiTPipeline.save_pretrained``,
safetensors), and ``OUT/recipe.json`` with the settings and the wall time of each stage.

    OMP_NUM_THREADS=1 python experiments/diffusers_latent_model.py --out runs/latent-user --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from _script import run

#: 32x32 grayscale images <-> 4 x 8 x 8 latents (two downsamplings)
VAE = dict(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
           up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
           latent_channels=4, norm_num_groups=8, sample_size=32)
#: 16 tokens of 128 channels; out_channels set (DiTPipeline reads it); every width 0.25..1 keeps whole heads
DIT = dict(num_attention_heads=4, attention_head_dim=32, in_channels=4, out_channels=4, num_layers=6, sample_size=8,
           patch_size=2, num_embeds_ada_norm=10)


def _loop(desc, iters, step):
    bar = tqdm(range(iters), desc=desc, unit="it")
    t0 = time.perf_counter()
    for _ in bar:
        bar.set_postfix(loss=f"{step():.4f}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/latent-user")
    ap.add_argument("--vae-iters", type=int, default=1500)
    ap.add_argument("--dit-iters", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--dit-lr", type=float, default=5e-4)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    from diffusers import AutoencoderKL, DDPMScheduler, DiTPipeline, DiTTransformer2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from ddsm.data import load_mnist

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = load_mnist()  # the training split ddsm also trains on (held-out images untouched)
    images, labels = data.train, data.train_labels

    vae = AutoencoderKL(**VAE)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=args.vae_iters)

    def vae_step() -> float:
        x = images[torch.randint(len(images), (args.batch_size,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.mse_loss(recon, x) + args.kl_weight * posterior.kl().mean() / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        return loss.item()

    vae_seconds = _loop("autoencoder", args.vae_iters, vae_step)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i:i + 256]).latent_dist.mode() for i in range(0, len(images), 256)])
        scale = float(1.0 / latents.std())
        recon_mse = float(F.mse_loss(vae.decode(latents[:256]).sample, images[:256]))
    vae.register_to_config(scaling_factor=scale)
    latents = latents * scale

    dit = DiTTransformer2DModel(**DIT)
    noise_sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    ema = EMAModel(dit.parameters(), decay=0.999, use_ema_warmup=True)
    opt = torch.optim.AdamW(dit.parameters(), lr=args.dit_lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=200, num_training_steps=args.dit_iters)

    def dit_step() -> float:
        idx = torch.randint(len(latents), (args.batch_size,), generator=gen)
        z0, y = latents[idx], labels[idx]
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(noise_sched.config.num_train_timesteps, (args.batch_size,), generator=gen)
        loss = F.mse_loss(dit(noise_sched.add_noise(z0, noise, t), timestep=t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(dit.parameters())
        return loss.item()

    dit.train()
    dit_seconds = _loop("DiT on latents", args.dit_iters, dit_step)
    ema.copy_to(dit.parameters())
    out = Path(args.out)
    DiTPipeline(transformer=dit.eval(), vae=vae, scheduler=noise_sched).save_pretrained(out, safe_serialization=True)
    recipe = {"script": "experiments/diffusers_latent_model.py", "vae": VAE, "dit": DIT,
              "scheduler": "DDPMScheduler(1000, linear)", "vae_iters": args.vae_iters, "dit_iters": args.dit_iters,
              "batch_size": args.batch_size, "vae_lr": args.vae_lr, "dit_lr": args.dit_lr,
              "kl_weight": args.kl_weight, "seed": args.seed, "threads": args.threads,
              "scaling_factor": scale, "vae_recon_mse_train256": recon_mse,
              "vae_train_seconds": round(vae_seconds, 1), "dit_train_seconds": round(dit_seconds, 1),
              "vae_parameters": sum(p.numel() for p in vae.parameters()),
              "dit_parameters": sum(p.numel() for p in dit.parameters())}
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(json.dumps(recipe))
    return 0


if __name__ == "__main__":
    run(main)
