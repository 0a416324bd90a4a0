"""Latent pipelines (DiTPipeline: DiT + AutoencoderKL; LDMPipeline: UNet + VQModel): ddsm slim works in latent
space, encodes the training data once, decodes every sample with the user's decoder, hands schedules back to the
user's pipeline, and refuses folders it cannot take in one line each."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from cli_helpers import assert_bad_input, invoke, slim_briefly  # noqa: E402
from ddsm.checkpoint import load_supernet, read_tensors  # noqa: E402
from ddsm.nn.backbone import to_images  # noqa: E402

# 8x8 grayscale images, latents of side 4 (one downsampling in the autoencoder)
VAE = dict(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
           up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), layers_per_block=1,
           norm_num_groups=8, sample_size=8)
DIT = dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=4,
           patch_size=2, num_embeds_ada_norm=10)  # out_channels 8: learns its variance, as DiT-XL does
UNET = dict(sample_size=4, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8)


def _jiggle(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # adaLN-Zero and zero-initialised outputs: move every weight so each term shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _pipeline(tmp_path, kind: str, **changes):
    """A saved DiTPipeline ('dit') or LDMPipeline ('ldm') folder of random weights, and the pipeline."""
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                        timestep_spacing="leading", clip_sample=False)
    if kind == "dit":
        torch.manual_seed(0)
        pipe = diffusers.DiTPipeline(transformer=_jiggle(diffusers.DiTTransformer2DModel(**{**DIT, **changes}), 1),
                                     vae=_jiggle(diffusers.AutoencoderKL(**VAE, latent_channels=4), 2),
                                     scheduler=scheduler)
    else:
        torch.manual_seed(0)
        pipe = diffusers.LDMPipeline(vqvae=_jiggle(diffusers.VQModel(**VAE, latent_channels=3, num_vq_embeddings=16),
                                                   2),
                                     unet=_jiggle(diffusers.UNet2DModel(**{**UNET, **changes}), 1), scheduler=scheduler)
    root = tmp_path / kind
    pipe.save_pretrained(root, safe_serialization=True)
    return root, pipe


@pytest.mark.parametrize("kind", ["dit", "ldm"])
def test_a_latent_pipeline_is_slimmed_in_latent_space_and_samples_decoded_images(tmp_path, kind):
    folder, pipe = _pipeline(tmp_path, kind)
    r = slim_briefly(tmp_path, folder, tmp_path / "run")
    assert r.exit_code == 0, r.output
    net = load_supernet(tmp_path / "run")
    ae = pipe.vae if kind == "dit" else pipe.vqvae
    assert net.config.diffusers.autoencoder.kind == ("vae" if kind == "dit" else "vqvae")
    # the training data were encoded once by the user's encoder, at the latents' shape, and cached
    latents, header = read_tensors(tmp_path / "run" / "latents.safetensors")
    channels = 4 if kind == "dit" else 3
    assert latents["latents"].shape[1:] == (channels, 4, 4) and header["autoencoder"]
    images = net.config.image_geometry
    assert (images.image_size, images.in_channels) == (8, 1) and net.config.geometry.image_size == 4
    # the supernet carries the user's autoencoder: its decode is the pipeline's (scaled latents, clamped)
    z = torch.randn(3, channels, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = ae.decode(z / ae.config.scaling_factor).sample.clamp(-1, 1)
    assert (to_images(net.model, z) - theirs).abs().max() <= 1e-5
    # sampling returns decoded images, and resuming the fine-tune reads the cached latents back
    out = tmp_path / "samples"
    r = invoke("sample", "--checkpoint", tmp_path / "run", "--width", "0.5", "--steps", "3", "--num", "2", "--out",
               out, "--no-progress")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "sample.json").read_text())["supernet"] == net.fingerprint
    from ddsm.samplers import SamplerConfig, generate, make_sampler
    from ddsm.diffusion import NoiseSchedule

    x = generate(net.model, make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind="ddim", steps=3)),
                 1.0, [0, 1])  # a conditional model: seed i has class i mod 10
    assert x.shape == (2, 1, 8, 8) and float(x.abs().max()) <= 1.0
    # any diffusers scheduler decodes too (DPM-Solver++ here), and the bridge to diffusers' own loop
    from ddsm.integrations.diffusers import sample_with_diffusers
    from ddsm.integrations.schedulers import make_scheduler, sample_with_scheduler

    from ddsm.plan import StepPlan

    y = sample_with_scheduler(net, make_scheduler(net, "dpm++", 3), 0.5, [0, 1])
    z = sample_with_diffusers(net, StepPlan((1.0,) * 3), [0, 1], sampler=SamplerConfig(kind="ddim", steps=3))
    assert y.shape == (2, 1, 8, 8)
    torch.testing.assert_close(z, x, rtol=0, atol=1e-4)  # diffusers' loop and ddsm's agree, decoded
    if kind == "dit":  # the DiT reuses its middle blocks' residual at cached steps (FORA), decoded like any sample
        level = net.model.reuse_levels()[-1]
        cached = StepPlan((1.0,) * 3, cached=(False, True, True), cache_level=level)
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind="ddim", steps=3))
        c = generate(net.model, sampler, cached, [0, 1])
        assert c.shape == x.shape and torch.isfinite(c).all()
        assert torch.equal(generate(net.model, sampler, StepPlan((1.0,) * 3, cached=(False,) * 3,
                                                                 cache_level=level), [0, 1]), x)


@pytest.mark.parametrize("kind", ["dit", "ldm"])
def test_an_exported_schedule_runs_in_the_users_pipeline_and_full_width_gives_its_images(tmp_path, kind):
    from ddsm.integrations.slim_pipeline import pipeline_for_schedule
    from ddsm.samplers import SamplerConfig
    from ddsm.schedule import Schedule

    folder, pipe = _pipeline(tmp_path, kind)
    assert slim_briefly(tmp_path, folder, tmp_path / "run").exit_code == 0
    net = load_supernet(tmp_path / "run")
    sampler = SamplerConfig(kind="ddim", steps=4, timestep_spacing="leading")
    kw = {"class_labels": [1, 7], "guidance_scale": 1.0} if kind == "dit" else {"batch_size": 2, "eta": 0.0}
    full = Schedule.uniform(net.config, sampler, 1.0)
    mine = pipeline_for_schedule(str(tmp_path / "run"), full)
    assert type(mine) is type(pipe)
    a = mine(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np", **kw).images
    b = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np", **kw).images
    assert abs(a - b).max() <= 1e-4
    denoiser = mine.transformer if kind == "dit" else mine.unet
    assert [w for _, w in denoiser.visited] == [1.0] * 4
    # with the user's scheduler switched to Heun (leading spacing), full width still gives the user's images
    heun = SamplerConfig(kind="heun", steps=4, timestep_spacing="leading", clip_sample=False)
    mine = pipeline_for_schedule(str(tmp_path / "run"), Schedule.uniform(net.config, heun, 1.0))
    pipe.scheduler = type(mine.scheduler).from_config(pipe.scheduler.config, timestep_spacing="leading")
    pipe.scheduler.set_timesteps(4)  # LDMPipeline scales the noise by init_noise_sigma before it sets the timesteps
    a = mine(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np", **kw).images
    b = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np", **kw).images
    assert abs(a - b).max() <= 1e-4 and len((mine.transformer if kind == "dit" else mine.unet).visited) == 7
    # a DPM-Solver++, UniPC or Heun schedule keeps ddsm's grid although the pipeline calls set_timesteps itself;
    # Heun's width is looked up per model call (7 calls for 4 steps)
    for kind2 in ("dpm++", "unipc", "heun"):
        solver = SamplerConfig(kind=kind2, steps=4, timestep_spacing="leading")
        widths = ([0.5, 1.0, 1.0, 0.5] * 2)[: solver.calls]
        pipe2 = pipeline_for_schedule(str(tmp_path / "run"), Schedule.for_model(net.config, solver, widths))
        pipe2(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np", **kw)
        called = (pipe2.transformer if kind == "dit" else pipe2.unet).visited
        assert [t for t, _ in called] == [int(t) for t in Schedule.uniform(net.config, solver, 1.0).timesteps]
        assert [w for _, w in called] == widths
    # a width per step, looked up per call; guided, a DiT runs both halves of each call at the step's width
    mixed = pipeline_for_schedule(str(tmp_path / "run"), Schedule.for_model(net.config, sampler, [1.0, 0.5, 0.5, 1.0]))
    if kind == "dit":
        kw = {**kw, "guidance_scale": 2.0}
    mixed(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np", **kw)
    denoiser = mixed.transformer if kind == "dit" else mixed.unet
    assert [w for _, w in denoiser.visited] == [1.0, 0.5, 0.5, 1.0]


def _edit(path, **changes):
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, **changes}))


@pytest.mark.parametrize("case, needles", [
    ("latent channels", ["in_channels 4", "latent_channels", "3 channels"]),
    ("latent side", ["sample_size 4", "side 8"]),
    ("vae without weights", ["no weights file", "vae"]),
    ("pipeline class", ["'StableDiffusionPipeline'", "DiTPipeline"]),
    ("hub id", ["'facebook/DiT-XL-2-256'", "hub id"]),
    ("shift factor", ["shift_factor 0.1", "scaling_factor"]),
])
def test_a_latent_folder_ddsm_cannot_take_is_one_line_and_writes_nothing(tmp_path, case, needles):
    folder, _ = _pipeline(tmp_path, "dit")
    vae = folder / "vae" / "config.json"
    if case == "latent channels":
        _edit(vae, latent_channels=3)
    elif case == "latent side":
        _edit(vae, sample_size=16)
    elif case == "vae without weights":
        (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    elif case == "pipeline class":
        _edit(folder / "model_index.json", _class_name="StableDiffusionPipeline")
    elif case == "hub id":
        _edit(folder / "transformer" / "config.json", _name_or_path="facebook/DiT-XL-2-256")
    else:
        _edit(vae, shift_factor=0.1)
    assert_bad_input(slim_briefly(tmp_path, folder, tmp_path / "out"), *needles)
    assert not (tmp_path / "out").exists()


def test_the_cost_table_reports_the_decoder_once_per_image(tmp_path):
    from ddsm.cost import CostTable
    from ddsm.cost.macs import count_decoder_macs, count_macs

    folder, _ = _pipeline(tmp_path, "dit")
    assert slim_briefly(tmp_path, folder, tmp_path / "run").exit_code == 0
    r = invoke("cost", "--checkpoint", tmp_path / "run", "--out", tmp_path / "cost.json", "--repeats", "1",
               "--warmup", "0", "--batch-size", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "decoder" in r.output and "1/image" in r.output
    table = CostTable.load(tmp_path / "cost.json")
    net = load_supernet(tmp_path / "run")
    d = count_decoder_macs(net.model.codec, 4, 4)
    assert table.decoder is not None and table.decoder.macs == d > 0
    full = count_macs(net.model, 1.0).total
    # the share of a half-cost schedule over 10 calls, with the decoder's one call per image added to both sides
    assert table.share_with_decoder(0.5, 10) == pytest.approx((0.5 * 10 * full + d) / (10 * full + d))
    assert table.share_with_decoder(1.0, 10) == pytest.approx(1.0)


def test_a_latent_model_is_searched_and_exported_with_decoded_samples_and_shares_with_the_decoder(tmp_path):
    import pandas as pd
    from cli_helpers import write_space
    from ddsm.report.export import decoder_macs
    from ddsm.schedule import Schedule

    folder, pipe = _pipeline(tmp_path, "ldm")
    assert slim_briefly(tmp_path, folder, tmp_path / "run").exit_code == 0
    space = write_space(tmp_path / "space.yaml", widths=[0.5, 1.0],
                        sampler={"kind": "ddim", "steps": 4, "timestep_spacing": "leading"})
    r = invoke("search", "--space", space, "--checkpoint", tmp_path / "run", "--out", tmp_path / "search",
               "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("export", tmp_path / "search", "--checkpoint", tmp_path / "run", "--out", tmp_path / "export",
               "--repeats", "1", "--warmup", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    front = pd.read_parquet(tmp_path / "export" / "front.parquet")
    d = decoder_macs(load_supernet(tmp_path / "run").model)
    full = front["macs_per_image"] / (1.0 - front["flop_saving"])
    assert d > 0 and ((front["macs_per_image"] + d) / (full + d) - front["share_with_decoder"]).abs().max() < 1e-9
    assert (front["share_with_decoder"] >= front["share"] - 1e-9).all()  # the decoder's fixed cost narrows savings
    files = sorted((tmp_path / "export").glob("front-*.json"))
    mine = __import__("ddsm.integrations.slim_pipeline", fromlist=["x"]).pipeline_for_schedule(
        str(tmp_path / "run"), files[0])
    images = mine(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4,
                  output_type="np").images
    assert images.shape == (2, 8, 8, 1)
    assert [w for _, w in mine.unet.visited] == list(Schedule.load(files[0]).widths)
