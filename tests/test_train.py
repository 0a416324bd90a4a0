"""Supernet training: the sandwich rule, finite losses, seeding and bit-exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from ddsm.checkpoint import load_supernet, read_tensors
from ddsm.data import ImageData
from ddsm.errors import DDSMError
from ddsm.train import Trainer, learning_rate, sandwich_widths

from conftest import assert_same_training_state

WIDTHS = (0.25, 0.5, 0.75, 1.0)


# ---------------------------------------------------------------------------- sandwich rule


def test_sandwich_is_widest_narrowest_then_random_middles():
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        ws = sandwich_widths(WIDTHS, 2, gen)
        assert ws[:2] == [1.0, 0.25] and len(ws) == 4
        assert set(ws[2:]) <= {0.5, 0.75}
        seen.update(ws[2:])
    assert seen == {0.5, 0.75}  # both middle widths get trained


def test_sandwich_edge_cases():
    gen = torch.Generator().manual_seed(0)
    assert sandwich_widths(WIDTHS, 0, gen) == [1.0, 0.25]
    assert sandwich_widths((0.5, 1.0), 3, gen) == [1.0, 0.5]  # nothing strictly between
    assert sandwich_widths((1.0,), 2, gen) == [1.0]


def test_sandwich_draws_are_reproducible():
    a = [sandwich_widths(WIDTHS, 1, g)[2] for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    b = [sandwich_widths(WIDTHS, 1, g)[2] for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    assert a == b


def test_learning_rate_warmup_then_cosine(tiny_run_config):
    cfg = tiny_run_config(lr=1e-3, warmup=4, iters=14, min_lr_ratio=0.1).train
    lrs = [learning_rate(s, cfg) for s in range(14)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert learning_rate(14, cfg) == pytest.approx(1e-4)
    const = tiny_run_config(lr=1e-3, warmup=0, lr_decay="constant").train
    assert learning_rate(100, const) == 1e-3


# ---------------------------------------------------------------------------- steps


def test_train_step_losses_are_finite_for_every_sandwich_width(tiny_run_config, tiny_data, tmp_path):
    tr = Trainer(tiny_run_config(n_random_widths=1), tmp_path, device="cpu", data=tiny_data, progress=False)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    losses = tr.train_step()
    assert "loss@1" in losses and "loss@0.25" in losses and len(losses) == 4  # 3 widths + grad_norm
    assert all(math.isfinite(v) for v in losses.values())
    assert tr.step == 1
    changed = [k for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])]
    assert "conv_out.weight" in changed  # the zero-initialised output layer starts learning
    assert tr.model.width == 1.0  # left at full width after the sandwich


def test_training_reduces_the_loss(tiny_run_config, tmp_path):
    # A trivially learnable distribution (one constant image): a few steps must cut the loss.
    x = torch.full((16, 1, 8, 8), 0.5)
    data = ImageData("const", x, x[:2])
    cfg = tiny_run_config(warmup=0, lr=1e-2, lr_decay="constant", n_random_widths=0)
    tr = Trainer(cfg, tmp_path, device="cpu", data=data, progress=False)
    losses = [tr.train_step()["loss@1"] for _ in range(16)]
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])


def test_same_seed_same_initial_weights_whatever_ran_before(tiny_run_config, tiny_data, tmp_path):
    # "every random draw of training comes from train.seed", the initial weights included.
    a = Trainer(tiny_run_config(seed=5), tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    torch.randn(100)  # unrelated use of the global generator in between
    b = Trainer(tiny_run_config(seed=5), tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    c = Trainer(tiny_run_config(seed=6), tmp_path / "c", device="cpu", data=tiny_data, progress=False)
    sa, sb, sc = (t.model.state_dict() for t in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_empty_training_split_is_refused(tiny_run_config, tmp_path):
    data = ImageData("none", torch.zeros(0, 1, 8, 8), torch.zeros(4, 1, 8, 8))
    with pytest.raises(DDSMError, match="no training images"):
        Trainer(tiny_run_config(), tmp_path, device="cpu", data=data, progress=False)


# ---------------------------------------------------------------------------- run, checkpoints, resume


def _assert_bitwise_equal(a: Trainer, b: Trainer) -> None:
    assert_same_training_state(a, b)


def test_run_writes_its_artifacts(tiny_run_config, tiny_data, tmp_path):
    Trainer(tiny_run_config(iters=2), tmp_path, device="cpu", data=tiny_data, progress=False).run()
    for name in ("config.json", "checkpoint.safetensors", "supernet.safetensors", "metrics.jsonl"):
        assert (tmp_path / name).is_file(), name
    _, header = read_tensors(tmp_path / "checkpoint.safetensors")
    assert header["step"] == 2 and header["kind"] == "ddsm.train_state"
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_after_a_shorter_run_is_bitwise_exact(tiny_run_config, tiny_data, tmp_path):
    # The random middle width is drawn from the data generator, so its state must be restored too.
    # (Warm-up outlasts the 6 steps, so the learning rate does not depend on iters.)
    kw = dict(n_random_widths=1)
    full = tiny_run_config(iters=6, **kw)
    a = Trainer(full, tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    a.run()
    b = Trainer(tiny_run_config(iters=3, **kw), tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    b.run()
    b2 = Trainer(full, tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    b2.run(resume=True)
    _assert_bitwise_equal(a, b2)
    sa = load_supernet(tmp_path / "a").model.state_dict()
    sb = load_supernet(tmp_path / "b").model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_with_dropout_restores_the_global_rng(tiny_run_config, tiny_data, tmp_path):
    from conftest import run_config_dict
    from ddsm.config import RunConfig, validate

    def cfg(iters):
        d = run_config_dict(iters=iters)
        d["model"]["unet"]["dropout"] = 0.3
        return validate(RunConfig, d)

    a = Trainer(cfg(4), tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    a.run()
    Trainer(cfg(2), tmp_path / "b", device="cpu", data=tiny_data, progress=False).run()
    torch.manual_seed(999)  # the resumed process starts from an unrelated global RNG state
    b = Trainer(cfg(4), tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    b.run(resume=True)
    _assert_bitwise_equal(a, b)


def test_resume_after_an_interrupt_is_bitwise_exact_with_cosine_decay(tiny_run_config, tiny_data, tmp_path,
                                                                      monkeypatch):
    # The real stop: Ctrl-C mid-run (same iters), with warm-up over and the cosine decay in play.
    cfg = tiny_run_config(iters=6, warmup=1, lr_decay="cosine")
    a = Trainer(cfg, tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    a.run()

    b = Trainer(cfg, tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    real_step = Trainer.train_step

    def interrupting(self, *args, **kwargs):
        if self.step == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        b.run()
    monkeypatch.undo()
    _, header = read_tensors(tmp_path / "b" / "checkpoint.safetensors")
    assert header["step"] == 3  # the interrupt saved a checkpoint

    b2 = Trainer(cfg, tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    b2.run(resume=True)
    _assert_bitwise_equal(a, b2)


def test_supernet_file_holds_the_ema_weights(tiny_run_config, tiny_data, tmp_path):
    tr = Trainer(tiny_run_config(iters=3, ema_decay=0.5), tmp_path, device="cpu", data=tiny_data, progress=False)
    tr.run()
    net = load_supernet(tmp_path)
    assert net.source.endswith("supernet.safetensors")
    sd = net.model.state_dict()
    assert all(torch.equal(sd[k], tr.ema[k]) for k in sd)
    assert not all(torch.equal(sd[k], tr.model.state_dict()[k]) for k in sd)  # EMA, not the raw weights
    # the training state gives the EMA by default and the raw weights on request
    ck = tmp_path / "checkpoint.safetensors"
    assert all(torch.equal(v, tr.ema[k]) for k, v in load_supernet(ck).model.state_dict().items())
    raw = load_supernet(ck, ema=False).model.state_dict()
    assert all(torch.equal(v, tr.model.state_dict()[k]) for k, v in raw.items())
    assert net.config == tr.config.model and net.header["step"] == 3


def test_resume_with_another_architecture_names_the_field(tiny_run_config, tiny_data, trained_run):
    from conftest import run_config_dict
    from ddsm.config import RunConfig, validate

    d = run_config_dict(iters=6)
    d["model"]["unet"]["base_channels"] = 16
    tr = Trainer(validate(RunConfig, d), trained_run, device="cpu", data=tiny_data, progress=False)
    with pytest.raises(DDSMError, match=r"base_channels 8 vs 16"):
        tr.run(resume=True)


def test_resume_with_another_recipe_names_the_field(tiny_run_config, tiny_data, trained_run):
    tr = Trainer(tiny_run_config(iters=6, lr=5e-4), trained_run, device="cpu", data=tiny_data, progress=False)
    with pytest.raises(DDSMError, match=r"train\.lr 0\.001 vs 0\.0005"):
        tr.run(resume=True)


def test_fresh_run_refuses_a_folder_with_a_checkpoint(tiny_run_config, tiny_data, trained_run):
    before = (trained_run / "checkpoint.safetensors").read_bytes()
    tr = Trainer(tiny_run_config(), trained_run, device="cpu", data=tiny_data, progress=False)
    with pytest.raises(DDSMError, match="already holds a training run; pass --resume"):
        tr.run()
    assert (trained_run / "checkpoint.safetensors").read_bytes() == before


def test_resume_without_a_checkpoint_is_refused(tiny_run_config, tiny_data, tmp_path):
    tr = Trainer(tiny_run_config(), tmp_path, device="cpu", data=tiny_data, progress=False)
    with pytest.raises(DDSMError, match="cannot resume: .*checkpoint.safetensors.* does not exist"):
        tr.run(resume=True)


def test_resume_drops_metrics_logged_after_the_last_checkpoint(tiny_run_config, tiny_data, tmp_path):
    import json

    cfg = dict(n_random_widths=0, checkpoint_every=10)
    Trainer(tiny_run_config(iters=10, **cfg), tmp_path, device="cpu", data=tiny_data, progress=False).run()
    log = tmp_path / "metrics.jsonl"
    # a run killed hard at step 15 logged a row its checkpoint (step 10) does not cover
    log.write_text(log.read_text() + json.dumps({"step": 15, "loss@1": 9.0}) + "\n")
    Trainer(tiny_run_config(iters=20, **cfg), tmp_path, device="cpu", data=tiny_data, progress=False).run(resume=True)
    steps = [json.loads(ln)["step"] for ln in log.read_text().splitlines()]
    assert steps == [10, 20]  # rows every 10 steps, none replayed twice


# ---------------------------------------------------------------------------- resolution-aware training


def test_resolution_aware_training_visits_every_side_and_resumes_exactly(tiny_run_config, tiny_data, tmp_path):
    cfg = tiny_run_config(iters=6, resolutions=[2, 4])
    a = Trainer(cfg, tmp_path / "a", device="cpu", data=tiny_data, progress=False)
    seen = []
    forward = a.model.forward
    a.model.forward = lambda x, t: (seen.append(x.shape[-1]), forward(x, t))[1]
    a.run()
    assert set(seen) == {2, 4, 8}
    b = Trainer(tiny_run_config(iters=3, resolutions=[2, 4]), tmp_path / "b", device="cpu", data=tiny_data,
                progress=False)
    b.run()
    b2 = Trainer(cfg, tmp_path / "b", device="cpu", data=tiny_data, progress=False)
    b2.run(resume=True)
    _assert_bitwise_equal(a, b2)
    assert load_supernet(tmp_path / "a").trained_resolutions == (2, 4, 8)


def test_fine_tuning_starts_from_the_given_supernet(tiny_run_config, tiny_data, trained_run, tmp_path):
    t = Trainer(tiny_run_config(init_from=str(trained_run)), tmp_path / "ft", device="cpu", data=tiny_data,
                progress=False)
    start = load_supernet(trained_run).model.state_dict()
    assert all(torch.equal(start[k], v) for k, v in t.model.state_dict().items())


def test_training_sides_must_divide_the_image(tiny_run_config):
    with pytest.raises(DDSMError, match=r"train.resolutions entry 3 does not divide the image size 8; valid: \[2, 4, 8\]"):
        tiny_run_config(resolutions=[3])
