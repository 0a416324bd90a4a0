"""Datasets in memory: digits, image folders, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddsm.config import DataConfig
from ddsm.data import _split, load_data, load_digits, load_folder, load_torchvision
from ddsm.errors import DDSMError


@pytest.fixture(scope="module")
def digits():
    return load_digits(size=8)


def test_digits_shapes_and_range(digits):
    assert digits.train.shape == (1437, 1, 8, 8) and digits.holdout.shape == (360, 1, 8, 8)
    assert digits.train.dtype == torch.float32
    assert digits.train.min() == -1.0 and digits.train.max() == 1.0
    assert digits.train_labels.shape == (1437,) and digits.holdout_labels.shape == (360,)


def test_digits_resize_and_channels():
    d = load_digits(size=16, channels=3, holdout_fraction=0.1)
    assert d.train.shape[1:] == (3, 16, 16)
    assert -1.0 <= d.train.min() and d.train.max() <= 1.0
    torch.testing.assert_close(d.train[:, 0], d.train[:, 2])  # grey replicated into RGB


def test_digits_split_is_a_stratified_partition(digits):
    from sklearn.datasets import load_digits as sk_digits

    sk = sk_digits()
    # the two splits together hold every original image exactly once
    allx = torch.cat([digits.train, digits.holdout]).reshape(-1, 64)
    want = torch.tensor(sk.images.reshape(-1, 64) / 16.0 * 2 - 1, dtype=torch.float32)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(allx) == key(want)
    tr, ho = _split(len(sk.target), 0.2, 0, sk.target)
    assert len(np.intersect1d(tr, ho)) == 0 and len(tr) + len(ho) == len(sk.target)
    # stratified: every class has its share of the held-out set (within one image)
    counts = torch.bincount(digits.holdout_labels, minlength=10).numpy()
    share = np.bincount(sk.target) * 0.2
    assert np.all(np.abs(counts - share) <= 1)


def test_split_seed_changes_the_split_reproducibly():
    a, b, c = load_digits(8, split_seed=1), load_digits(8, split_seed=1), load_digits(8, split_seed=2)
    assert torch.equal(a.holdout, b.holdout) and not torch.equal(a.holdout, c.holdout)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_no_holdout():
    d = load_digits(8, holdout_fraction=0.0)
    assert len(d.train) == 1797 and len(d.holdout) == 0


# ---------------------------------------------------------------------------- folders


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB").save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8), "L").save(folder / "b.PNG")
    Image.fromarray(rng.integers(0, 256, (40, 25, 3), dtype=np.uint8), "RGB").save(folder / "c.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8), "L").save(folder / "nested" / "d.jpeg")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA").save(folder / "e.png")
    (folder / "notes.txt").write_text("not an image")  # ignored
    return folder


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_of_mixed_images(image_folder, channels):
    d = load_folder(image_folder, size=8, channels=channels, holdout_fraction=0.0)
    assert d.train.shape == (5, channels, 8, 8) and d.name == "imgs"
    assert d.train.min() >= -1.0 and d.train.max() <= 1.0
    assert d.train.std() > 0.1  # actual pixel content, not a constant


def test_folder_split_and_exact_pixels(tmp_path):
    folder = tmp_path / "solid"
    folder.mkdir()
    for i in range(10):
        Image.new("L", (8, 8), color=i * 20).save(folder / f"{i}.png")
    d = load_folder(folder, size=8, channels=1, holdout_fraction=0.2)
    assert len(d.train) == 8 and len(d.holdout) == 2
    # sorted file order, exact mapping 0..255 -> -1..1 when no resize is needed
    levels = sorted(x.mean().item() for x in torch.cat([d.train, d.holdout]))
    assert levels == pytest.approx([i * 20 / 255 * 2 - 1 for i in range(10)], abs=1e-6)


def test_folder_crop_keeps_the_centre(tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    img = np.zeros((8, 24), dtype=np.uint8)
    img[:, 8:16] = 255  # white centre square, black sides
    Image.fromarray(img, "L").save(folder / "x.png")
    x = load_folder(folder, size=8, channels=1, holdout_fraction=0.0).train
    assert x.min().item() == pytest.approx(1.0)


def test_empty_folder_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DDSMError, match=r"image folder '.*empty' holds no PNG or JPEG"):
        load_folder(tmp_path / "empty", 8, 1)


@pytest.mark.parametrize("content", [b"garbage bytes, not a PNG", b""], ids=["garbage", "empty"])
def test_unreadable_image_names_the_file(image_folder, content):
    bad = image_folder / "zz_broken.png"
    bad.write_bytes(content)
    with pytest.raises(DDSMError) as info:
        load_folder(image_folder, 8, 1)
    assert f"cannot read image {str(bad)!r}" in str(info.value)


def test_truncated_image_names_the_file(image_folder):
    good = (image_folder / "a.png").read_bytes()
    bad = image_folder / "trunc.png"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DDSMError, match="trunc.png"):
        load_folder(image_folder, 8, 3)


def test_nonexistent_folder(tmp_path):
    with pytest.raises(DDSMError, match=r"'.*nowhere' is neither 'digits'.* nor a folder"):
        load_folder(tmp_path / "nowhere", 8, 1)
    with pytest.raises(DDSMError, match="nowhere"):
        load_data(DataConfig(source=str(tmp_path / "nowhere")), 8, 1)


def test_unsupported_channel_count(image_folder):
    with pytest.raises(DDSMError, match="in_channels 2 is not supported"):
        load_folder(image_folder, 8, 2)


def test_load_data_dispatches_on_the_source(image_folder):
    assert load_data(DataConfig(source="digits"), 8, 1).name == "digits"
    assert load_data(DataConfig(source=str(image_folder), holdout_fraction=0.0), 8, 1).train.shape == (5, 1, 8, 8)


@pytest.mark.parametrize("spec, needle", [("torchvision:CIFAR10", "must look like"),
                                          ("torchvision::/tmp", "must look like")])
def test_bad_torchvision_spec(spec, needle):
    with pytest.raises(DDSMError, match=needle):
        load_torchvision(spec, 8, 1)
