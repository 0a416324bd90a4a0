"""A slimmed diffusers model inside diffusers' DDPM/DDIM pipelines, at a width per step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddsm.errors import DDSMError

diffusers = pytest.importorskip("diffusers")

from ddsm.integrations.slim_pipeline import SlimPipelineUNet, widths_for_pipeline  # noqa: E402
from ddsm.nn.diffusers_unet import SlimUNet2DModel  # noqa: E402

CONFIG = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
              norm_num_groups=4, attention_head_dim=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    original = diffusers.UNet2DModel(**CONFIG).eval()
    with torch.no_grad():
        for p in original.parameters():
            p.add_(0.05 * torch.randn_like(p))
    slim = SlimUNet2DModel(dict(original.config), widths=(0.5, 1.0)).eval()
    slim.load_state_dict(original.state_dict())
    return original, slim


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_at_full_width_the_pipeline_gives_the_original_pipelines_images(models, kind):
    original, slim = models
    sched = diffusers.DDIMScheduler(num_train_timesteps=100) if kind == "ddim" else \
        diffusers.DDPMScheduler(num_train_timesteps=100)
    cls = diffusers.DDIMPipeline if kind == "ddim" else diffusers.DDPMPipeline
    steps = 5 if kind == "ddim" else 100
    ref = cls(unet=original, scheduler=sched)(batch_size=2, generator=torch.Generator().manual_seed(7),
                                              num_inference_steps=steps, output_type="np").images
    got = cls(unet=SlimPipelineUNet(slim, original.config), scheduler=sched)(
        batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=steps,
        output_type="np").images
    assert np.abs(got - ref).max() <= 1e-4


def test_a_width_per_step_is_what_the_pipeline_runs(models):
    original, slim = models
    sched = diffusers.DDIMScheduler(num_train_timesteps=100)
    widths = [0.5, 0.5, 1.0, 1.0, 0.5]
    unet = SlimPipelineUNet(slim, original.config, widths_for_pipeline(sched, 5, widths))
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=sched)
    narrow = pipe(batch_size=1, generator=torch.Generator().manual_seed(1), num_inference_steps=5,
                  output_type="np").images
    assert [w for _, w in unet.visited] == widths  # noisiest first, one call per step
    full = diffusers.DDIMPipeline(unet=original, scheduler=sched)(
        batch_size=1, generator=torch.Generator().manual_seed(1), num_inference_steps=5, output_type="np").images
    assert np.abs(narrow - full).max() > 1e-3
    with pytest.raises(DDSMError, match="3 widths for 5 inference steps"):
        widths_for_pipeline(sched, 5, [1.0] * 3)
    with pytest.raises(DDSMError, match="timestep 1 is not in this schedule"):
        unet(torch.zeros(1, 1, 8, 8), 1)
