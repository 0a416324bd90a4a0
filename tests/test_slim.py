"""``ddsm slim``: a diffusers UNet2DModel becomes a supernet, fine-tuned, searched, exported and run in a pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

diffusers = pytest.importorskip("diffusers")

from safetensors.torch import load_file  # noqa: E402

from ddsm.checkpoint import load_supernet  # noqa: E402
from ddsm.nn.slimmed import SlimmedUNet  # noqa: E402
from cli_helpers import assert_bad_input, invoke, write_space  # noqa: E402
from test_diffusers_folder import _save as _user_model  # noqa: E402  (the tiny user model of the folder tests)

#: a fine-tune of a few steps on the built-in digits at the tiny model's 8x8
RECIPE = {"train": {"iters": 4, "batch_size": 8, "lr": 0.01, "warmup": 0, "lr_decay": "constant", "checkpoint_every": 2, "ema_decay": 0.5,
                    "ema_warmup": False, "threads": 1}}


def _slim(tmp_path, folder, out, *extra, **train):
    cfg = tmp_path / f"recipe-{out.name}.yaml"
    cfg.write_text(yaml.safe_dump({"train": {**RECIPE["train"], **train}}))
    return invoke("slim", "--from-diffusers", folder, "--width", "0.5", "--config", cfg, "--out", out,
                  "--no-progress", *extra)


@pytest.fixture(scope="module")
def slimmed(tmp_path_factory):
    """(user model folder, finished 4-step slim run folder), shared read-only."""
    base = tmp_path_factory.mktemp("slim")
    folder = _user_model(base / "user-model")
    result = _slim(base, folder, base / "run")
    assert result.exit_code == 0, result.output
    return folder, base / "run"


def _probe(seed=0, n=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=gen), torch.tensor([3.0, 42.5, 99.0][:n])


def test_the_slimmed_supernet_is_the_untouched_original_at_full_width(slimmed):
    folder, run = slimmed
    net = load_supernet(run)
    assert isinstance(net.model, SlimmedUNet) and net.config.unet.widths == (0.5, 1.0)
    original = diffusers.UNet2DModel.from_pretrained(folder).eval()
    x, t = _probe()
    with torch.no_grad():
        full = net.model.set_active_width(1.0)(x, t)
        assert (full - original(x, t).sample).abs().max() <= 1e-5
    source = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    kept = {k: v for k, v in net.model.original.state_dict().items()}
    assert kept.keys() == source.keys() and all(torch.equal(kept[k], source[k]) for k in source)


def test_the_memory_guard_sees_the_models_own_channels_and_attention(slimmed):
    """The memory guard asks the backbone: a slimmed model's estimate comes from its own level shapes."""
    from ddsm.config import UNetConfig
    from ddsm.nn.unet import SlimUNet

    _, run = slimmed
    net = load_supernet(run)
    shown = net.config.unet  # what the run folder records (kept for its fingerprint)
    assert [shown.channels(i) for i in range(2)] == [8, 16] and shown.attn_resolutions == (4,)
    same = UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                      attn_resolutions=(4,), widths=(0.5, 1.0), group_channels=4)
    assert net.model.forward_bytes(64, 8) == SlimUNet(same).forward_bytes(64, 8)
    assert net.model.valid_resolutions() == same.valid_resolutions() == [2, 4, 8]


def test_fine_tuning_moves_the_narrow_width_and_logs_every_width(slimmed):
    from ddsm.integrations.diffusers_folder import load_slim_model

    folder, run = slimmed
    start = load_slim_model(folder, widths=(0.5, 1.0))  # the default order is the folder's own
    x, t = _probe()
    net = load_supernet(run).model.set_active_width(0.5)
    start.set_active_width(0.5)
    with torch.no_grad():
        assert (net(x, t) - start(x, t)).abs().max() > 1e-4
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and "loss@0.5" in rows[-1] and "loss@1" not in rows[-1]  # width 1 is frozen


def test_a_stopped_fine_tune_resumes_bit_for_bit(tmp_path, slimmed):
    folder, run = slimmed
    assert _slim(tmp_path, folder, tmp_path / "half", "--iters", "2").exit_code == 0
    result = invoke("slim", "--out", tmp_path / "half", "--resume", "--iters", "4", "--no-progress")
    assert result.exit_code == 0, result.output
    a, b = load_file(str(run / "supernet.safetensors")), load_file(str(tmp_path / "half" / "supernet.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unfreezing_the_full_width_fine_tunes_it_towards_the_original(tmp_path, slimmed):
    folder, _ = slimmed
    assert _slim(tmp_path, folder, tmp_path / "unfrozen", "--unfreeze-full").exit_code == 0
    net = load_supernet(tmp_path / "unfrozen")
    assert net.model.original is None and not net.config.diffusers.freeze_full
    original = diffusers.UNet2DModel.from_pretrained(folder).eval()
    x, t = _probe()
    with torch.no_grad():
        assert (net.model.set_active_width(1.0)(x, t) - original(x, t).sample).abs().max() > 1e-4
    rows = [json.loads(ln) for ln in (tmp_path / "unfrozen" / "metrics.jsonl").read_text().splitlines()]
    assert "loss@1" in rows[-1]


@pytest.mark.parametrize("order", ["importance", "none"])
def test_the_fine_tune_starts_from_the_original_in_either_channel_order(tmp_path, slimmed, order):
    from ddsm.config import RunConfig, validate
    from ddsm.integrations.diffusers_folder import model_config_for, read_diffusers_folder
    from ddsm.train import Trainer

    folder, _ = slimmed
    model = model_config_for(read_diffusers_folder(folder), (0.5, 1.0))
    cfg = validate(RunConfig, {"model": model.model_dump(mode="json"), "slim": {"source": str(folder), "order": order},
                               "data": {"source": "digits"}, **RECIPE})
    s = Trainer(cfg, tmp_path / order, progress=False)
    source = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    same = all(torch.equal(v, source[k]) for k, v in s.model.net.state_dict().items())
    assert same == (order == "none")  # importance reorders the channels ...
    x, t = _probe()
    with torch.no_grad():  # ... and leaves the full-width function as it was
        ref = diffusers.UNet2DModel.from_pretrained(folder).eval()(x, t).sample
        s.model.net.set_active_width(1.0)
        assert (s.model.net(x, t) - ref).abs().max() <= 1e-5


def test_a_slimmed_model_is_searched_exported_and_run_in_diffusers_pipeline(tmp_path, slimmed):
    from ddsm.integrations.slim_pipeline import pipeline_for_schedule
    from ddsm.schedule import Schedule

    folder, run = slimmed
    space = write_space(tmp_path / "space.yaml", widths=[0.5, 1.0],
                        sampler={"kind": "ddim", "steps": 4, "timestep_spacing": "leading"})
    result = invoke("search", "--space", space, "--checkpoint", run, "--out", tmp_path / "search", "--no-progress")
    assert result.exit_code == 0, result.output
    result = invoke("export", tmp_path / "search", "--checkpoint", run, "--out", tmp_path / "export", "--repeats", "1",
                    "--warmup", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "export").glob("front-*.json"))
    assert files
    sched = Schedule.load(files[0])
    pipe = pipeline_for_schedule(str(run), files[0])
    pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np")
    assert [w for _, w in pipe.unet.visited] == list(sched.widths)
    # At full width the pipeline is the user's own pipeline: the same images on the same generator.
    full = Schedule.uniform(load_supernet(run).config, sched.sampler, 1.0)
    pipe = pipeline_for_schedule(str(run), full)
    ours = pipe(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=4, output_type="np").images
    theirs = diffusers.DDIMPipeline(unet=diffusers.UNet2DModel.from_pretrained(folder).eval(), scheduler=pipe.scheduler)(
        batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=4, output_type="np").images
    assert np.abs(ours - theirs).max() <= 1e-4


def _png_folder(path, side, mode="L"):
    from PIL import Image

    path.mkdir()
    for i in range(3):
        Image.fromarray(np.full((side, side, 3) if mode == "RGB" else (side, side), 40 * i, np.uint8), mode).save(
            path / f"{i}.png")
    return path


@pytest.mark.parametrize("case, needles", [
    ("hub id", ["'someone/model'", "hub id", "never downloads"]),
    ("small images", ["4x4", "8x8"]),
    ("colour images", ["3 channel", "with 1"]),
    ("guidance without a null label", ["guidance scale 2", "--null-label last"]),
    ("null label of an unconditional model", ["--null-label last", "unconditional"]),
    ("scaled_linear", ["'scaled_linear'", "linear, squaredcos_cap_v2"]),
    ("bad width", ["width 0.3", "groups"]),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case, needles):
    folder, args = "someone/model", ["--width", "0.5"]
    if case != "hub id":
        folder = _user_model(tmp_path / "m", **({"num_class_embeds": 10} if "guidance" in case else {}),
                             scheduler={"scaled_linear": {"beta_schedule": "scaled_linear"}}.get(case))
    if case == "small images":
        args += ["--data", _png_folder(tmp_path / "imgs", 4)]
    if case == "colour images":
        args += ["--data", _png_folder(tmp_path / "imgs", 8, "RGB")]
    if case == "bad width":
        args = ["--width", "0.3"]
    if case == "null label of an unconditional model":
        args += ["--null-label", "last"]
    if case == "guidance without a null label":  # a slim run of it works; guided sampling is what is refused
        assert _slim(tmp_path, folder, tmp_path / "run", iters=1).exit_code == 0
        result = invoke("sample", "--checkpoint", tmp_path / "run", "--width", "1", "--steps", "2",
                        "--guidance-scale", "2", "--out", tmp_path / "out")
        assert_bad_input(result, *needles)
        assert not (tmp_path / "out").exists()
        return
    result = invoke("slim", "--from-diffusers", folder, "--iters", "1", "--out", tmp_path / "out", "--no-progress",
                    *args)
    assert_bad_input(result, *needles)
    assert not (tmp_path / "out").exists()


def test_a_resume_cannot_change_the_recipe(slimmed):
    _, run = slimmed
    assert_bad_input(invoke("slim", "--out", run, "--resume", "--width", "0.25"), "--width", "cannot change")


def test_a_resume_refuses_a_model_whose_weights_changed(tmp_path):
    """A run that stopped must not go on slimming another model put in its folder's place."""
    folder = _user_model(tmp_path / "user-model")
    assert _slim(tmp_path, folder, tmp_path / "run", iters=2).exit_code == 0
    before = (tmp_path / "run" / "supernet.safetensors").read_bytes()
    torch.manual_seed(1)  # same architecture and size, other weights
    diffusers.UNet2DModel.from_pretrained(folder).apply(
        lambda m: torch.nn.init.normal_(m.weight) if isinstance(m, torch.nn.Conv2d) else None).save_pretrained(folder)
    result = invoke("slim", "--out", tmp_path / "run", "--resume", "--iters", "4", "--no-progress")
    assert_bad_input(result, "not the one this run slims")
    assert (tmp_path / "run" / "supernet.safetensors").read_bytes() == before


def test_the_hidden_map_term_is_each_widths_prefix_of_the_originals(tmp_path, slimmed):
    folder, run = slimmed
    net = load_supernet(run).model
    x, t = _probe()
    with torch.no_grad():
        for w, channels in ((1.0, 8), (0.5, 4)):
            net.set_active_width(w)
            eps, hidden = net(x, t, return_hidden=True)
            assert torch.equal(eps, net(x, t)) and hidden.shape == (3, channels, 8, 8)
    plain = _slim(tmp_path, folder, tmp_path / "plain", iters=1)
    with_term = _slim(tmp_path, folder, tmp_path / "hidden", "--hidden-weight", "0.5", iters=1)
    assert plain.exit_code == 0 and with_term.exit_code == 0, with_term.output
    logs = {name: [json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("plain", "hidden")}
    assert logs["hidden"][0]["hidden@0.5"] > 0 and "hidden@0.5" not in logs["plain"][0]
    assert logs["hidden"][0]["loss@0.5"] == logs["plain"][0]["loss@0.5"]  # same batch and start: the ε part alike
    a, b = (load_file(str(tmp_path / name / "supernet.safetensors")) for name in ("plain", "hidden"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "hidden" / "config.json").read_text())["slim"]["hidden_weight"] == 0.5


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_a_v_or_x0_predicting_model_is_slimmed_in_its_own_parameterisation(tmp_path, prediction):
    from ddsm.config import RunConfig
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.diffusion.prediction import eps_and_x0
    from ddsm.integrations.slim_pipeline import pipeline_for_schedule
    from ddsm.samplers import SamplerConfig
    from ddsm.schedule import Schedule
    from ddsm.train import Trainer

    sched = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": prediction}
    folder = _user_model(tmp_path / "user-model", scheduler=sched)
    assert _slim(tmp_path, folder, tmp_path / "run", iters=2).exit_code == 0
    net = load_supernet(tmp_path / "run")
    assert net.config.diffusion.prediction_type == prediction
    # the data term regresses the data's v (or x0), which gives back the batch's noise through the model's conversion
    config = RunConfig.model_validate_json((tmp_path / "run" / "config.json").read_text())
    trainer = Trainer(config, tmp_path / "probe", progress=False)
    batch = trainer.target.draw(trainer)
    ab = NoiseSchedule(net.config.diffusion).alpha_bar_at(batch.t.cpu()).float().view(-1, 1, 1, 1)
    eps, _ = eps_and_x0(batch.data_target, batch.x_t, ab, prediction)
    torch.testing.assert_close(eps, batch.eps, rtol=1e-3, atol=1e-3)
    # at full width, ddsm's schedule in diffusers' DDIM pipeline gives the user's own pipeline's images
    full = Schedule.uniform(net.config, SamplerConfig(kind="ddim", steps=4), 1.0)
    pipe = pipeline_for_schedule(str(tmp_path / "run"), full)
    ours = pipe(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=4, output_type="np").images
    user = diffusers.DDIMPipeline(unet=diffusers.UNet2DModel.from_pretrained(folder).eval(),
                                  scheduler=diffusers.DDIMScheduler(**sched))
    theirs = user(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=4,
                  output_type="np").images
    assert np.abs(ours - theirs).max() <= 1e-4


def test_a_class_conditional_model_is_slimmed_with_its_labels_and_guided(tmp_path):
    from ddsm.integrations.diffusers import sample_with_diffusers
    from ddsm.plan import StepPlan
    from ddsm.samplers import SamplerConfig, generate, make_sampler
    from ddsm.diffusion.noise import NoiseSchedule

    # 10 digit classes + the unconditional label as the last of 11 class embeddings
    folder = _user_model(tmp_path / "user-model", num_class_embeds=11)
    assert _slim(tmp_path, folder, tmp_path / "run", "--null-label", "last", iters=2, label_dropout=0.5).exit_code == 0
    net = load_supernet(tmp_path / "run")
    assert net.model.num_classes == 10 and net.config.diffusers.null_label
    original = diffusers.UNet2DModel.from_pretrained(folder).eval()
    x, t = _probe()
    y = torch.tensor([0, 9, 4])
    with torch.no_grad():
        net.model.set_active_width(1.0)
        assert (net.model(x, t, cond=y) - original(x, t, class_labels=y).sample).abs().max() <= 1e-5
        # no label: the null label, the original's last embedding
        assert (net.model(x, t) - original(x, t, class_labels=torch.full((3,), 10)).sample).abs().max() <= 1e-5
        net.model.set_active_width(0.5)
        assert (net.model(x, t, cond=y) - net.model(x, t, cond=torch.tensor([1, 2, 3]))).abs().max() > 0
    # guided sampling: ddsm's loop and the diffusers bridge agree, and the guidance changes the images
    cfg = SamplerConfig(kind="ddim", steps=4, guidance_scale=3.0)
    plan = StepPlan.of([0.5, 0.5, 1.0, 1.0])
    ours = generate(net.model, make_sampler(NoiseSchedule(net.config.diffusion), cfg), plan, [0, 1, 2], labels=[3, 4, 5])
    bridge = sample_with_diffusers(net, plan, [0, 1, 2], sampler=cfg, labels=[3, 4, 5])
    torch.testing.assert_close(bridge, ours, rtol=1e-5, atol=1e-5)
    plain = generate(net.model, make_sampler(NoiseSchedule(net.config.diffusion), cfg.model_copy(
        update={"guidance_scale": 1.0})), plan, [0, 1, 2], labels=[3, 4, 5])
    assert (plain - ours).abs().max() > 1e-3
    # without --null-label all 11 embeddings are classes: label dropout is off by default and refused when asked
    assert _slim(tmp_path, folder, tmp_path / "plain", iters=1).exit_code == 0
    assert load_supernet(tmp_path / "plain").model.num_classes == 11
    assert_bad_input(_slim(tmp_path, folder, tmp_path / "bad", iters=1, label_dropout=0.1),
                     "label_dropout 0.1 needs a null label")
