"""Train the worked example's "user model": a small diffusers UNet2DModel on the built-in digits.

This stands in for a model a user already has. It is trained with diffusers'
own components only, as in diffusers' unconditional training example:
``UNet2DModel``, ``DDPMScheduler.add_noise``, an ε-MSE loss, AdamW with
``get_cosine_schedule_with_warmup`` and ``EMAModel``. It is not part of ddsm:
ddsm meets the result only as a folder (``ddsm slim --from-diffusers``).

Output: ``OUT/unet`` and ``OUT/scheduler`` (``DDPMPipeline.save_pretrained``,
safetensors), and ``OUT/recipe.json`` with the settings and the wall time.

    python experiments/diffusers_user_model.py --out experiments/results/user-model --iters 3000 --threads 1
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

#: the user model's architecture (diffusers' config names); every width 0.25..1 keeps whole groups and heads
UNET = dict(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="experiments/results/user-model")
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from ddsm.data import load_digits

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    images = load_digits(16, 1).train  # the training split ddsm also trains on (held-out images untouched)
    unet = UNet2DModel(**UNET)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    lr = get_cosine_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=args.iters)
    t0 = time.perf_counter()
    bar = tqdm(range(args.iters), desc="user model", unit="it")
    for _ in bar:
        x0 = images[torch.randint(len(images), (args.batch_size,), generator=gen)]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(scheduler.config.num_train_timesteps, (args.batch_size,), generator=gen)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr.step()
        ema.step(unet.parameters())
        bar.set_postfix(loss=f"{loss.item():.4f}")
    seconds = time.perf_counter() - t0
    ema.copy_to(unet.parameters())
    out = Path(args.out)
    DDPMPipeline(unet=unet.eval(), scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    recipe = {"script": "experiments/diffusers_user_model.py", "unet": UNET, "scheduler": "DDPMScheduler(1000, linear)",
              "iters": args.iters, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "threads": args.threads, "train_seconds": round(seconds, 1),
              "parameters": sum(p.numel() for p in unet.parameters())}
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(json.dumps(recipe))
    return 0


if __name__ == "__main__":
    run(main)
