"""A user's diffusers DiTTransformer2DModel: the slimmable mirror is the original at full width, and ddsm slim makes
it a supernet that samples (guided, with any scheduler), costs and refuses what it cannot take."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from cli_helpers import assert_bad_input, invoke, slim_briefly  # noqa: E402
from ddsm.checkpoint import load_supernet  # noqa: E402
from ddsm.errors import DDSMError  # noqa: E402
from ddsm.nn.diffusers_dit import SlimDiTTransformer2DModel  # noqa: E402
from ddsm.nn.slimmed_dit import SlimmedDiT  # noqa: E402

TINY = dict(num_attention_heads=4, attention_head_dim=8, in_channels=1, num_layers=2, sample_size=8, patch_size=2,
            num_embeds_ada_norm=10)


def _original(seed=0, **changes):
    torch.manual_seed(seed)
    model = diffusers.DiTTransformer2DModel(**{**TINY, **changes}).eval()
    with torch.no_grad():  # adaLN-Zero starts at zero: move every weight so the test sees each term
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _probe(n=3, channels=1):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, channels, 8, 8, generator=gen), torch.tensor([3.0, 500.5, 999.0])[:n]


@pytest.mark.parametrize("changes", [{}, {"out_channels": 2}, {"activation_fn": "gelu"},
                                     {"in_channels": 3, "patch_size": 4, "num_layers": 3}])
def test_full_width_is_the_original_function_and_loads_strictly(changes):
    original = _original(**changes)
    mirror = SlimDiTTransformer2DModel(dict(original.config), widths=(0.25, 0.5, 1.0))
    mirror.load_state_dict(original.state_dict(), strict=True)
    x, t = _probe(channels=original.config.in_channels)
    y = torch.tensor([0, 9, 10])  # 10: the null label, the embedding table's last row
    with torch.no_grad():
        assert (mirror.eval()(x, t, y) - original(x, t, class_labels=y).sample).abs().max() <= 1e-5
        # a narrow width runs the first heads and MLP units: another function, the same output shape
        mirror.set_active_width(0.5)
        narrow = mirror(x, t, y)
        assert narrow.shape == original(x, t, class_labels=y).sample.shape
        assert (narrow - original(x, t, class_labels=y).sample).abs().max() > 1e-3
        # a frozen copy holds only that width's weights and computes the same
        frozen = SlimDiTTransformer2DModel(dict(original.config), widths=(0.25, 0.5, 1.0))
        frozen.load_state_dict(original.state_dict())
        frozen.freeze(0.5)
        assert frozen.transformer_blocks[0].attn1.to_q.weight.shape[0] == 16
        assert torch.allclose(frozen(x, t, y), narrow, atol=1e-6)


def test_training_mode_never_drops_labels_at_random():
    original = _original()
    mirror = SlimDiTTransformer2DModel(dict(original.config)).train()
    mirror.load_state_dict(original.state_dict())
    x, t = _probe()
    y = torch.tensor([1, 2, 3])
    torch.manual_seed(5)
    a = mirror(x, t, y)
    torch.manual_seed(6)
    assert torch.equal(a, mirror(x, t, y))  # diffusers' LabelEmbedding would drop 10 % of labels in train mode


def test_unsupported_settings_and_widths_are_one_line():
    with pytest.raises(DDSMError, match=r"norm_type 'ada_norm_single' is not supported yet"):
        SlimDiTTransformer2DModel({**TINY, "norm_type": "ada_norm_single"})
    with pytest.raises(DDSMError, match=r"width 0.1 keeps 0 of 4 heads"):
        SlimDiTTransformer2DModel(TINY, widths=(0.1, 1.0))


def _folder(tmp_path, pipeline=False, vae=False, **changes):
    original = _original(**changes)
    root = tmp_path / "dit"
    model_dir = root / "transformer" if pipeline else root
    original.save_pretrained(model_dir)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    scheduler.save_config(root / "scheduler" if pipeline else root)
    if vae:
        (root / "vae").mkdir()
    return root, original


def test_a_dit_folder_is_slimmed_sampled_guided_and_costed(tmp_path):
    folder, original = _folder(tmp_path, pipeline=True, out_channels=2)  # learns its variance, as DiT-XL does
    r = slim_briefly(tmp_path, folder, tmp_path / "run")
    assert r.exit_code == 0, r.output
    net = load_supernet(tmp_path / "run")
    assert isinstance(net.model, SlimmedDiT) and net.model.num_classes == 10 and net.config.dit.widths == (0.5, 1.0)
    x, t = _probe()
    y = torch.tensor([4, 5, 6])
    with torch.no_grad():
        full = net.model.set_active_width(1.0)(x, t, cond=y)
        # the ε channels of the untouched original; no label is its null label
        assert (full - original(x, t, class_labels=y).sample[:, :1]).abs().max() <= 1e-5
        null = original(x, t, class_labels=torch.full((3,), 10)).sample[:, :1]
        assert (net.model(x, t) - null).abs().max() <= 1e-5
        # the fine-tune moved width 0.5 only; its extract is the same function with half the heads' weights
        sub = net.model.extract_subnet(0.5)
        assert torch.allclose(sub(x, t, cond=y), net.model.set_active_width(0.5)(x, t, cond=y), atol=1e-6)
        assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in net.model.net.parameters())
    for args in (["--width", "0.5", "--guidance-scale", "2"], ["--scheduler", "heun", "--width", "1"]):
        out = tmp_path / f"samples-{args[1]}"
        r = invoke("sample", "--checkpoint", tmp_path / "run", *args, "--steps", "3", "--num", "2", "--out", out,
                   "--no-progress")
        assert r.exit_code == 0, r.output
        assert json.loads((out / "sample.json").read_text())["supernet"] == net.fingerprint
    r = invoke("cost", "--checkpoint", tmp_path / "run", "--out", tmp_path / "cost.json", "--repeats", "1",
               "--warmup", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    costs = {e["width"]: e["macs"] for e in json.loads((tmp_path / "cost.json").read_text())["entries"]}
    assert 0 < costs[0.5] < costs[1.0]


@pytest.mark.parametrize("case, needles", [
    ("latent pipeline without its autoencoder", ["vae", "no config.json"]),
    ("importance order", ["'importance'", "order 'none'"]),
    ("null label", ["--null-label", "DiT"]),
    ("unsupported norm", ["norm_type 'ada_norm_single'", "'ada_norm_zero'"]),
])
def test_what_ddsm_cannot_slim_is_one_line_and_writes_nothing(tmp_path, case, needles):
    extra = {"importance order": ["--order", "importance"], "null label": ["--null-label", "last"]}.get(case, [])
    if case == "unsupported norm":
        folder, _ = _folder(tmp_path)
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "norm_type": "ada_norm_single"}))
    else:
        latent = case.startswith("latent pipeline")
        folder, _ = _folder(tmp_path, pipeline=latent, vae=latent)
    assert_bad_input(slim_briefly(tmp_path, folder, tmp_path / "out", *extra), *needles)
    assert not (tmp_path / "out").exists()
