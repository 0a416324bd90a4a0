"""The FID feature net: trained on the data, deterministic, tied to its dataset by fingerprint."""

from __future__ import annotations

import pytest
import torch

from ddsm.checkpoint import save_tensors
from ddsm.data import ImageData, load_digits
from ddsm.errors import DDSMError
from ddsm.metrics.featurenet import FeatureNet, accuracy, featurenet_info, train_featurenet


@pytest.fixture(scope="module")
def digits8() -> ImageData:
    return load_digits(size=8)


@pytest.fixture(scope="module")
def net(digits8) -> FeatureNet:
    return train_featurenet(digits8, seed=0, epochs=3, num_features=32, channels=16)


def test_labelled_data_trains_a_classifier_whose_penultimate_layer_is_the_feature(net, digits8):
    assert net.config.task == "labels" and net.config.num_classes == 10
    assert isinstance(net.num_features, int) and net.num_features == 32
    feats = net(digits8.holdout[:5])
    assert feats.shape == (5, 32)
    # Three epochs already recognise most held-out digits (chance is 0.1); the accuracy is stored.
    assert net.holdout_accuracy is not None and net.holdout_accuracy > 0.6
    assert net.holdout_accuracy == pytest.approx(accuracy(net, digits8.holdout, digits8.holdout_labels))
    assert net.data_fingerprint == digits8.fingerprint()


def test_training_is_deterministic_for_a_seed(net, digits8):
    again = train_featurenet(digits8, seed=0, epochs=3, num_features=32, channels=16)
    assert again.fingerprint() == net.fingerprint()
    other = train_featurenet(digits8, seed=1, epochs=3, num_features=32, channels=16)
    assert other.fingerprint() != net.fingerprint()


def test_training_leaves_the_global_rng_alone(digits8):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    train_featurenet(ImageData("few", digits8.train[:16], digits8.holdout[:4], digits8.train_labels[:16],
                               digits8.holdout_labels[:4]), seed=0, epochs=1)
    assert torch.equal(torch.rand(3), expected)


def test_unlabelled_data_falls_back_to_rotation_prediction(tiny_data):
    net = train_featurenet(tiny_data, seed=0, epochs=1, num_features=8, channels=4)
    assert net.config.task == "rotation" and net.config.num_classes == 4
    assert 0.0 <= net.holdout_accuracy <= 1.0


def test_bad_settings_are_one_line_errors(tiny_data):
    with pytest.raises(DDSMError, match="needs class labels"):
        train_featurenet(tiny_data, task="labels", epochs=1)
    with pytest.raises(DDSMError, match="num_features"):
        train_featurenet(tiny_data, num_features=1, epochs=1)
    with pytest.raises(DDSMError, match="must be positive"):
        train_featurenet(tiny_data, epochs=0)


def test_save_load_round_trip_gives_identical_features(net, digits8, tmp_path):
    path = tmp_path / "fn.safetensors"
    net.save(path)
    loaded = FeatureNet.load(path, digits8)
    x = digits8.holdout[:16]
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert loaded.fingerprint() == net.fingerprint()
    assert loaded.holdout_accuracy == net.holdout_accuracy and loaded.data_name == "digits"
    assert loaded.recipe == {"seed": 0, "epochs": 3, "batch_size": 64, "lr": 5e-3}
    assert featurenet_info(loaded)["data_fingerprint"] == digits8.fingerprint()


def test_loading_for_another_dataset_names_both_fingerprints(net, digits8, tiny_data, tmp_path):
    path = tmp_path / "fn.safetensors"
    net.save(path)
    with pytest.raises(DDSMError) as e:
        FeatureNet.load(path, tiny_data)
    msg = str(e.value)
    assert "\n" not in msg and digits8.fingerprint() in msg and tiny_data.fingerprint() in msg


def test_a_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_tensors(path, {"w": torch.zeros(1)}, {"kind": "ddsm.supernet"})
    with pytest.raises(DDSMError, match="not a feature net"):
        FeatureNet.load(path)


def test_tampered_weights_are_detected(net, tmp_path):
    path = tmp_path / "fn.safetensors"
    net.save(path)
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["net.head.bias"] = tensors["net.head.bias"] + 1
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(DDSMError, match="corrupt"):
        FeatureNet.load(path)


def test_images_of_the_wrong_size_are_named(net):
    with pytest.raises(DDSMError, match=r"\(N, 1, 8, 8\)"):
        net.check_images(torch.zeros(2, 3, 8, 8))
