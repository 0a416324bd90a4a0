"""FID in the feature net's space: ~0 for a set against itself, reproducible, cached reference statistics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ddsm.data import ImageData, load_digits
from ddsm.errors import DDSMError
from ddsm.metrics import fid as fid_module
from ddsm.metrics.featurenet import train_featurenet
from ddsm.metrics.fid import FID, InceptionFeatures, clear_memory_cache


@pytest.fixture(scope="module")
def digits8() -> ImageData:
    return load_digits(size=8)


@pytest.fixture(scope="module")
def saved_net(digits8, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fn") / "featurenet.safetensors"
    train_featurenet(digits8, seed=0, epochs=3, num_features=32, channels=16).save(path)
    return path


@pytest.fixture
def fid(digits8, saved_net) -> FID:
    return FID.for_data(digits8, featurenet=saved_net)


def test_a_set_against_itself_is_zero_and_a_shifted_set_is_not(digits8, saved_net):
    f = FID.for_data(digits8, featurenet=saved_net, split="holdout")
    assert f.fid(digits8.holdout) == pytest.approx(0.0, abs=1e-6)
    held = f.fid(digits8.holdout)
    shifted = f.fid((digits8.holdout + 0.25).clamp(-1, 1))
    more = f.fid((digits8.holdout + 0.75).clamp(-1, 1))
    assert held < 1e-6 < shifted < more


def test_held_out_real_images_are_close_to_the_training_reference(fid, digits8):
    floor = fid.fid(digits8.holdout)
    assert 0 < floor < fid.fid((digits8.holdout + 0.5).clamp(-1, 1))


def test_reproducible_to_1e_6_across_calls_and_objects(fid, digits8, saved_net):
    x = (digits8.holdout + 0.1 * torch.randn(digits8.holdout.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    a, b = fid.fid(x), fid.fid(x)
    clear_memory_cache()
    c = FID.for_data(digits8, featurenet=saved_net).fid(x)
    assert abs(a - b) <= 1e-6 and abs(a - c) <= 1e-6


def test_the_result_is_a_float_computed_in_float64(fid, digits8):
    value = fid.fid(digits8.holdout)
    assert isinstance(value, float)
    assert fid.metric.real_features_sum.dtype == torch.float64


def test_reference_statistics_are_cached_on_disk_by_data_and_net_fingerprint(digits8, saved_net, monkeypatch):
    from ddsm.metrics.featurenet import FeatureNet

    clear_memory_cache()
    FID.for_data(digits8, featurenet=saved_net)
    net_fp = FeatureNet.load(saved_net).fingerprint()
    cache = saved_net.parent / "fid-reference" / f"{digits8.fingerprint()}-{net_fp}-train.safetensors"
    assert cache.is_file()
    # A fresh process (empty memory cache) reads the file instead of recomputing.
    clear_memory_cache()
    monkeypatch.setattr(FID, "_write_cache", lambda self, stats: pytest.fail("recomputed despite the disk cache"))
    f = FID.for_data(digits8, featurenet=saved_net)
    assert f.num_reference == len(digits8.train)
    # ... and the in-memory cache is used before the disk.
    monkeypatch.setattr(FID, "_read_cache", lambda self: pytest.fail("read the disk despite the memory cache"))
    FID.for_data(digits8, featurenet=saved_net)


def test_a_corrupt_cache_file_is_recomputed(digits8, saved_net, fid):
    expected = fid.fid(digits8.holdout)
    for f in (saved_net.parent / "fid-reference").iterdir():
        f.write_bytes(b"garbage")
    clear_memory_cache()
    assert FID.for_data(digits8, featurenet=saved_net).fid(digits8.holdout) == pytest.approx(expected, abs=1e-6)


def test_an_unsaved_net_caches_in_memory_only(digits8):
    net = train_featurenet(ImageData("few", digits8.train[:32], digits8.holdout[:8], digits8.train_labels[:32],
                                     digits8.holdout_labels[:8]), seed=0, epochs=1, num_features=8, channels=4)
    data = ImageData("few", digits8.train[:32], digits8.holdout[:8], digits8.train_labels[:32], digits8.holdout_labels[:8])
    f = FID.for_data(data, featurenet=net)
    assert f.cache_file is None and f.key in fid_module._MEMORY


def test_a_feature_net_of_other_data_is_refused(saved_net, tiny_data):
    with pytest.raises(DDSMError, match="trained on dataset"):
        FID.for_data(tiny_data, featurenet=saved_net)


def test_bad_samples_are_one_line_errors(fid):
    with pytest.raises(DDSMError, match=r"takes \(N, 1, 8, 8\)"):
        fid.fid(torch.zeros(4, 1, 16, 16))
    with pytest.raises(DDSMError, match="at least 2"):
        fid.fid(torch.zeros(1, 1, 8, 8))
    x = torch.zeros(4, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(DDSMError, match="NaN"):
        fid.fid(x)


def test_exactly_one_feature_space(digits8, saved_net, tmp_path):
    with pytest.raises(DDSMError, match="exactly one"):
        FID.for_data(digits8)
    with pytest.raises(DDSMError, match="exactly one"):
        FID.for_data(digits8, featurenet=saved_net, inception=tmp_path / "w.pth")


def test_missing_inception_weights_name_the_path(digits8, tmp_path):
    missing = tmp_path / "nowhere" / "inception.pth"
    with pytest.raises(DDSMError) as e:
        FID.for_data(digits8, inception=missing)
    assert str(missing) in str(e.value) and "never downloads" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is importable here")
def test_inception_without_torchvision_says_so(tmp_path):
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not used")
    with pytest.raises(DDSMError, match="need torchvision"):
        InceptionFeatures(weights)


def test_any_module_with_num_features_is_a_feature_space(digits8):
    class Mean(torch.nn.Module):
        num_features = 2

        def forward(self, x):
            return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], 1)

    f = FID(Mean(), digits8.train)
    assert f.fid(digits8.train) == pytest.approx(0.0, abs=1e-9)
    assert f.fid(digits8.train * 0.5) > 0.01
    with pytest.raises(DDSMError, match="num_features"):
        FID(torch.nn.Identity(), digits8.train)
