"""Class-conditional models: labels from the data, label dropout for classifier-free guidance, guided sampling.

Both backbones take class labels through one rule (``ddsm.nn.backbone.class_labels``): labels
0..num_classes-1, and num_classes as the null label that guidance samples with and training substitutes
for dropped labels. Unconditional models are untouched (their configs, fingerprints and outputs).
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ddsm.config import ModelConfig, RunConfig, validate
from ddsm.diffusion import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.nn import build_backbone
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.plan import StepPlan
from ddsm.samplers.loop import guided_eps
from ddsm.train import Trainer

from cli_helpers import assert_bad_input, invoke
from conftest import TINY_UNET, randomise

TINY_DIT = {"image_size": 8, "patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 4,
            "widths": (0.25, 0.5, 0.75, 1.0)}
MODELS = {
    "unet": {"unet": {**TINY_UNET, "num_classes": 10}, "diffusion": {"num_timesteps": 50}},
    "dit": {"dit": {**TINY_DIT, "num_classes": 10}, "diffusion": {"num_timesteps": 50}},
}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    torch.manual_seed(0)
    return randomise(build_backbone(validate(ModelConfig, MODELS[request.param]))).eval()


def test_an_unconditional_unet_keeps_its_config_and_fingerprint():
    plain = validate(ModelConfig, {"unet": TINY_UNET})
    assert "num_classes" not in plain.model_dump()["unet"]
    assert plain.fingerprint() == validate(ModelConfig, {"unet": {**TINY_UNET, "num_classes": 0}}).fingerprint()
    assert validate(ModelConfig, MODELS["unet"]).fingerprint() != plain.fingerprint()


def test_labels_change_the_prediction_and_none_is_the_null_label(model):
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([3.0, 30.0])
    with torch.no_grad():
        a, b = model(x, t, cond=torch.tensor([1, 1])), model(x, t, cond=torch.tensor([2, 2]))
        null = model(x, t, cond=torch.tensor([10, 10]))
        assert not torch.allclose(a, b) and torch.equal(model(x, t), null)
    for bad, needle in [(torch.tensor([11, 0]), "class label 11 is out of range"),
                        (torch.tensor([0.5, 1.0]), "must be integers")]:
        with pytest.raises(DDSMError, match=needle):
            model(x, t, cond=bad)


def test_a_guided_step_at_scale_1_is_the_conditional_step_and_scale_0_the_unconditional(model):
    x, t, y = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)), 20.0, torch.tensor([0, 4, 9])
    with torch.no_grad():
        cond, uncond = model(x, t, cond=y), model(x, t)
        torch.testing.assert_close(guided_eps(model, x, t, y, 1.0), cond, rtol=0, atol=0)
        torch.testing.assert_close(guided_eps(model, x, t, y, 0.0), uncond, rtol=0, atol=1e-5)
        torch.testing.assert_close(guided_eps(model, x, t, y, 3.0), uncond + 3.0 * (cond - uncond), rtol=0, atol=1e-5)
    sampler = make_sampler(NoiseSchedule(validate(ModelConfig, MODELS["unet"]).diffusion),
                           SamplerConfig(kind="ddim", steps=3))
    a = generate(model, sampler, 0.5, [0, 1, 2], labels=[0, 4, 9])
    assert torch.equal(a, generate(model, sampler, 0.5, [0, 1, 2], labels=[0, 4, 9], guidance_scale=1.0))
    assert not torch.equal(a, generate(model, sampler, 0.5, [0, 1, 2], labels=[0, 4, 9], guidance_scale=2.0))
    # one image per seed and label whatever the batch, guided or not (to float rounding of other batch shapes)
    torch.testing.assert_close(
        generate(model, sampler, 0.5, [0, 1, 2], labels=[0, 4, 9], guidance_scale=2.0, batch_size=2),
        generate(model, sampler, 0.5, [0, 1, 2], labels=[0, 4, 9], guidance_scale=2.0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("labels, scale, needle", [
    ([0, 10], None, "class label 10 is not one of this model's classes; valid: 0..9"),
    ([0, -1], None, "class label -1"),
    ([0, 1], float("nan"), "guidance scale nan is not valid"),
    ([0, 1], float("inf"), "guidance scale inf is not valid"),
    ([0, 1], -1.0, "guidance scale -1.0 is not valid"),
    ([0], None, "one integer class label per seed (2)"),
])
def test_bad_labels_and_scales_are_one_line(model, labels, scale, needle):
    sampler = make_sampler(NoiseSchedule(validate(ModelConfig, MODELS["unet"]).diffusion),
                           SamplerConfig(kind="ddim", steps=2))
    with pytest.raises(DDSMError) as e:
        generate(model, sampler, 0.5, [0, 1], labels=labels, guidance_scale=scale)
    assert needle in str(e.value) and "\n" not in str(e.value)


def _run_config(kind: str, **train) -> RunConfig:
    return validate(RunConfig, {"model": MODELS[kind], "train": {"iters": 2, "batch_size": 64, "checkpoint_every": 1000,
                                                                 **train}})


def test_training_draws_labels_from_the_data_and_drops_them_at_the_configured_rate(tmp_path):
    from ddsm.data import load_digits

    data = load_digits(size=8)
    for rate in (0.0, 0.25, 1.0):
        tr = Trainer(_run_config("dit", label_dropout=rate), tmp_path / f"r{rate}", device="cpu", data=data,
                     progress=False)
        drops = []
        for _ in range(40):
            batch = tr.target.draw(tr)
            assert batch.cond is not None and batch.cond.shape == (64,)
            drops.append(float((batch.cond == 10).float().mean()))
        share = sum(drops) / len(drops)
        assert abs(share - rate) < 0.03, (rate, share)  # 2,560 labels: the share is within 0.03 of the rate
    kept = batch.cond[batch.cond != 10]
    assert kept.numel() == 0 or kept.max() <= 9


def test_a_conditional_model_trains_samples_with_labels_and_refuses_bad_input(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"dit": {**TINY_DIT, "widths": list(TINY_DIT["widths"]),
                                                     "num_classes": 10}, "diffusion": {"num_timesteps": 50}},
                                   "train": {"iters": 2, "batch_size": 8, "checkpoint_every": 1000}}))
    run = tmp_path / "run"
    r = invoke("train", "--config", cfg, "--out", run, "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--checkpoint", run, "--width", "0.5", "--steps", "2", "--num", "4", "--class-label", "3",
               "--class-label", "7", "--guidance-scale", "2", "--out", tmp_path / "s", "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert info["class_cycle"] == [3, 7] and info["sampler"]["guidance_scale"] == 2.0
    base = ["sample", "--checkpoint", run, "--width", "0.5", "--steps", "2", "--num", "4", "--no-progress"]
    for extra, needle in [(["--class-label", "10"], "class label 10 is not one of this model's classes"),
                          (["--guidance-scale", "nan"], "guidance_scale: Input should be a finite number"),
                          (["--guidance-scale", "-1"], "guidance_scale: Input should be greater than or equal to 0")]:
        assert_bad_input(invoke(*base, *extra, "--out", tmp_path / "bad"), needle)
        assert not (tmp_path / "bad").exists()
    for extra, needle in [(["--class-label", "1"], "unconditional (num_classes 0); it takes no class labels and no "
                                                   "guidance scale (got class labels)"),
                          (["--guidance-scale", "2"], "(got guidance scale 2)")]:
        assert_bad_input(invoke("sample", "--checkpoint", "digits", "--width", "1", "--num", "2", *extra,
                                "--out", tmp_path / "bad"), needle)


def test_unlabelled_data_and_a_dropout_on_an_unconditional_model_are_refused(tmp_path):
    from PIL import Image

    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(tmp_path / f"{i}.png")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"dit": {**TINY_DIT, "widths": list(TINY_DIT["widths"]),
                                                     "num_classes": 3}}, "train": {"iters": 1}}))
    assert_bad_input(invoke("train", "--config", cfg, "--data", tmp_path, "--out", tmp_path / "run", "--no-progress"),
                     "has no class labels", "one subfolder per class")
    cfg.write_text(yaml.safe_dump({"model": {"unet": {"image_size": 8}}, "train": {"label_dropout": 0.2}}))
    assert_bad_input(invoke("train", "--config", cfg, "--out", tmp_path / "run2", "--no-progress"),
                     "train.label_dropout applies to class-conditional models")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_an_image_folder_with_one_subfolder_per_class_is_labelled(tmp_path):
    from PIL import Image

    from ddsm.data import load_folder

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.new("L", (8, 8), 20 * i).save(tmp_path / c / f"{i}.png")
    d = load_folder(tmp_path, 8, 1, labelled=True)
    assert sorted(torch.cat([d.train_labels, d.holdout_labels]).tolist()) == [0] * 5 + [1] * 5
    # unasked (an unconditional model's data, a feature net of it) the folder stays unlabelled, as it always was
    plain = load_folder(tmp_path, 8, 1)
    assert plain.train_labels is None and torch.equal(plain.train, d.train)


def test_the_built_in_mnist_is_real_labelled_and_split_by_class():
    from ddsm.config import DataConfig
    from ddsm.data import check_native_shape, load_data

    d = load_data(DataConfig(source="mnist"), 32, 1)
    assert d.train.shape == (4000, 1, 32, 32) and d.holdout.shape == (1000, 1, 32, 32)
    assert d.train_labels.bincount().tolist() == [400] * 10 and d.holdout_labels.bincount().tolist() == [100] * 10
    assert float(d.train[:, :, :2].max()) == -1.0  # the 2-pixel padding is background
    assert float(d.train.max()) == 1.0 and len(d.train.unique()) > 100  # real grey levels, not a synthetic set
    check_native_shape(DataConfig(source="mnist"), 32, 1)
    with pytest.raises(DDSMError, match="is 32x32 grayscale; the model takes 16x16"):
        check_native_shape(DataConfig(source="mnist"), 16, 1)


def test_evaluators_sample_a_conditional_model_with_seed_labels_and_the_samplers_guidance(model):
    from ddsm.samplers.batched import generate_many

    noise = NoiseSchedule(validate(ModelConfig, MODELS["unet"]).diffusion)
    seeds = [10, 11, 12, 13]
    for scale in (None, 2.0):
        sampler = make_sampler(noise, SamplerConfig(kind="ddim", steps=3, guidance_scale=scale))
        many = generate_many(model, sampler, [[0.5] * 3, [1.0] * 3], seeds)
        for k, w in enumerate((0.5, 1.0)):  # seed s is sampled with class s mod 10, guided as the sampler says
            one = generate(model, sampler, w, seeds, labels=[s % 10 for s in seeds])
            torch.testing.assert_close(many[k], one, rtol=0, atol=1e-5)
    assert SamplerConfig(kind="ddim", steps=3).model_dump() == SamplerConfig(kind="ddim", steps=3,
                                                                             guidance_scale=None).model_dump()
    assert "guidance_scale" not in SamplerConfig().model_dump()  # unset: schedules and spaces keep their hashes


def test_a_guided_schedule_does_not_fit_an_unconditional_supernet():
    from ddsm.schedule import Schedule

    plain = validate(ModelConfig, {"unet": TINY_UNET, "diffusion": {"num_timesteps": 50}})
    cond = validate(ModelConfig, MODELS["unet"])
    sampler = SamplerConfig(kind="ddim", steps=2, guidance_scale=2.0)
    Schedule.uniform(cond, sampler, 0.5)  # fits the conditional one
    with pytest.raises(DDSMError, match=r"it guides \(guidance scale 2\) but this supernet is unconditional"):
        Schedule.uniform(plain, sampler, 0.5)


def test_the_verdict_reports_class_accuracy_of_a_conditional_model(tmp_path):
    from ddsm.checkpoint import Supernet
    from ddsm.data import load_digits
    from ddsm.metrics.featurenet import train_featurenet
    from ddsm.metrics.verdict import Verdict, VerdictSettings

    data = load_digits(size=8)
    fn = train_featurenet(data, seed=0, epochs=1)
    torch.manual_seed(0)
    config = validate(ModelConfig, MODELS["dit"])
    net = Supernet(randomise(build_backbone(config)).eval(), config, {}, "memory")
    sampler = SamplerConfig(kind="ddim", steps=2)
    verdict = Verdict(net, sampler, fn, data.train, VerdictSettings(num=50, teacher_num=50, draws=10))
    assert "class_accuracy" in verdict.metrics
    table = verdict.score({"narrow": StepPlan((0.25, 0.25))}).table()
    acc = table[table["metric"] == "class_accuracy"]
    assert len(acc) == 2 and acc["value"].between(0, 1).all() and (acc["low"] <= acc["value"]).all()
    # by hand: the classifier's class of each full-width sample against seed mod 10
    x = generate(net.model, make_sampler(NoiseSchedule(config.diffusion), sampler), 1.0, list(range(10_000, 10_050)))
    hand = float((fn.double().logits(x.clamp(-1, 1).double()).argmax(1).numpy()
                  == [s % 10 for s in range(10_000, 10_050)]).mean())
    assert acc[acc["schedule"] == "full width"]["value"].iloc[0] == pytest.approx(hand, abs=1e-12)
    plain = validate(ModelConfig, {"unet": TINY_UNET, "diffusion": {"num_timesteps": 50}})
    unconditional = Supernet(build_backbone(plain).eval(), plain, {}, "memory")
    assert "class_accuracy" not in Verdict(unconditional, sampler, fn, data.train,
                                           VerdictSettings(num=50, teacher_num=50, draws=10)).metrics


def test_the_diffusers_loop_samples_a_conditional_model_as_ddsm_does():
    pytest.importorskip("diffusers")
    from ddsm.checkpoint import Supernet
    from ddsm.integrations.diffusers import sample_with_diffusers
    from ddsm.schedule import Schedule

    torch.manual_seed(0)
    config = validate(ModelConfig, MODELS["dit"])
    net = Supernet(randomise(build_backbone(config)).eval(), config, {}, "memory")
    sched = Schedule.uniform(config, SamplerConfig(kind="ddim", steps=3, guidance_scale=2.0), 0.5)
    seeds = [3, 4, 5, 6]
    ours = generate(net.model, make_sampler(NoiseSchedule(config.diffusion), sched.sampler), sched, seeds)
    theirs = sample_with_diffusers(net, sched, seeds)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)
    labelled = sample_with_diffusers(net, sched, seeds, labels=[0, 0, 0, 0])
    assert not torch.allclose(labelled, theirs)


def test_guided_calls_keep_to_max_call_images_and_the_diffusers_denoiser_needs_labels():
    from ddsm.checkpoint import Supernet
    from ddsm.integrations.diffusers import ScheduledDenoiser
    from ddsm.samplers.batched import generate_many
    from ddsm.schedule import Schedule

    torch.manual_seed(0)
    config = validate(ModelConfig, MODELS["dit"])
    model = randomise(build_backbone(config)).eval()
    sizes = []
    model.register_forward_hook(lambda m, args, out: sizes.append(len(args[0])))
    sampler = make_sampler(NoiseSchedule(config.diffusion), SamplerConfig(kind="ddim", steps=2, guidance_scale=3.0))
    generate_many(model, sampler, [[0.5, 0.5]], list(range(8)), batch_size=8, max_call_images=4)
    assert sizes and max(sizes) <= 4
    den = ScheduledDenoiser(Supernet(model, config, {}, "memory"),
                            Schedule.uniform(config, SamplerConfig(kind="ddim", steps=2, guidance_scale=3.0), 0.5))
    x, t = torch.randn(2, 1, 8, 8), den.timesteps[0]
    with pytest.raises(DDSMError, match="class-conditional .* pass class_labels"):
        den(x, t)
    assert den(x, t, [1, 2]).shape == x.shape  # a list of labels is taken as one label per sample
    with pytest.raises(DDSMError, match="class label 11 is out of range"):
        den(x, t, [1, 11])


def test_a_guided_search_prices_both_passes_of_every_step(tmp_path):
    from ddsm.checkpoint import load_supernet
    from ddsm.search import SearchConfig
    from ddsm.search.setup import search_costs

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"dit": {**TINY_DIT, "widths": list(TINY_DIT["widths"]),
                                                     "num_classes": 10}, "diffusion": {"num_timesteps": 50}},
                                   "train": {"iters": 1, "batch_size": 8, "checkpoint_every": 1000}}))
    assert invoke("train", "--config", cfg, "--out", tmp_path / "run", "--no-progress").exit_code == 0
    net = load_supernet(tmp_path / "run")
    base = {"widths": [0.25, 0.5, 0.75, 1.0], "budget": 0.6, "objectives": {"quality": "proxy", "cost": "flops"}}
    plain = search_costs(validate(SearchConfig, {**base, "sampler": {"kind": "ddim", "steps": 4}}), net)
    guided = search_costs(validate(SearchConfig, {**base, "sampler": {"kind": "ddim", "steps": 4,
                                                                       "guidance_scale": 2.0}}), net)
    for w in (0.25, 1.0):
        assert guided.call(w) == 2 * plain.call(w)  # conditional and unconditional pass at the step's width
    assert guided.share(StepPlan((0.25,) * 4)) == plain.share(StepPlan((0.25,) * 4))  # shares stay as they were
    with pytest.raises(DDSMError, match="prices steps in MACs only"):  # a timed pass is not half a guided step
        plain.__class__.from_mapping({w: 1.0 for w in base["widths"]}, base["widths"], unit="latency").per_step(2)
