"""Pixel KID: unbiased on one distribution, separates widths of a trained supernet, a search objective and a verdict metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddsm.config import RunConfig, validate
from ddsm.data import load_digits
from ddsm.metrics import get_metric
from ddsm.metrics.distribution import Candidate, pixel_reference, pixels
from ddsm.metrics.intervals import Draws, bootstrap_counts
from ddsm.metrics.verdict import METRICS, SET_STATISTICS
from ddsm.plan import StepPlan
from ddsm.samplers import SamplerConfig

from conftest import run_config_dict


def _blobs(n: int, seed: int, *, blur: bool = True) -> torch.Tensor:
    """n 8x8 images in [-1, 1]: smoothed noise (blur) or the same noise unsmoothed (a sharper distribution)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 1, 8, 8), generator=g)
    if blur:
        x = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 2
    return torch.tanh(x)


def _interval(samples: torch.Tensor, reference, draws: int = 200, seed: int = 0):
    n = len(samples)
    return Draws.of(Candidate(pixels(samples), reference).kid(), n, bootstrap_counts(n, draws, seed)).centred().interval()


def test_two_draws_of_one_distribution_cover_zero_and_another_distribution_does_not():
    reference = pixel_reference(_blobs(400, seed=1))
    covered = [_interval(_blobs(150, seed=100 + s), reference, seed=s) for s in range(20)]
    # a 95 % interval: 20 independent draws, at least 17 must cover 0 (all but about 1 in 60 000 of runs if calibrated)
    assert sum(not iv.excludes(0.0) for iv in covered) >= 17, [str(iv) for iv in covered]
    assert abs(np.mean([iv.value for iv in covered])) < np.mean([iv.high - iv.low for iv in covered]) / 4  # unbiased
    sharper = _interval(_blobs(150, seed=200, blur=False), reference)
    assert sharper.low > 0, str(sharper)


def test_pixels_are_not_standardised_so_constant_pixels_do_not_blow_up():
    # digits have border pixels of spread ~1e-3: standardising by it made KID huge and noisy
    x = _blobs(100, seed=3)
    x[:, :, 0, :] = -1.0  # a constant border row, as in digits
    reference = pixel_reference(x)
    assert not reference.standardises
    value = Candidate(pixels(_blobs(100, seed=4)), reference).kid()(np.ones(100))
    assert math.isfinite(value) and abs(value) < 1.0


@pytest.fixture(scope="module")
def trained_digits_supernet(tmp_path_factory):
    """A tiny supernet trained for 80 steps on 8x8 digits: enough for its widths to differ in quality."""
    from ddsm.checkpoint import load_supernet
    from ddsm.train import Trainer

    out = tmp_path_factory.mktemp("digits-run")
    cfg = validate(RunConfig, run_config_dict(iters=80, batch_size=32, warmup=20, ema_decay=0.99))
    Trainer(cfg, out, device="cpu", data=load_digits(size=8), progress=False).run()
    return out, load_supernet(out)


def test_it_separates_the_narrowest_width_from_full_width_on_a_trained_supernet(trained_digits_supernet):
    out, net = trained_digits_supernet
    steps = 10
    ev = get_metric("pixel_kid").build(net, SamplerConfig(kind="ddim", steps=steps), checkpoint=out, num=200,
                                       seed=0, batch_size=256, fuse=False)
    plans = [StepPlan((1.0,) * steps), StepPlan((0.25,) * steps)]
    full, narrow = ev.sample(plans)
    counts = bootstrap_counts(200, 200, 0)
    d = Draws.of(Candidate(pixels(narrow), ev.reference).kid(), 200, counts).minus(
        Draws.of(Candidate(pixels(full), ev.reference).kid(), 200, counts))
    assert d.low > 0, str(d)  # the narrow width is significantly further from the real digits
    scores = ev.evaluate(plans)
    assert scores["valid"].all() and scores["pixel_kid"].iloc[1] > scores["pixel_kid"].iloc[0]


def test_pixel_kid_is_a_search_objective_and_a_verdict_set_statistic():
    m = get_metric("pixel_kid")
    assert m.objective and not m.needs_featurenet and m.min_num == 32
    assert "pixel_kid" in METRICS and not METRICS["pixel_kid"][1]  # lower is better
    assert "pixel_kid" in SET_STATISTICS  # resampled with bias-centred draws like KID


def test_evaluate_refuses_fewer_samples_than_the_metric_needs(tmp_path):
    from cli_helpers import assert_bad_input, invoke

    r = invoke("evaluate", "--checkpoint", "digits", "--width", "0.25", "--steps", "20", "--metric", "pixel_kid",
               "--num", "8", "--out", tmp_path / "e.csv", "--no-progress")
    assert_bad_input(r, "--num 8 is below the 32 samples pixel_kid needs")
    assert not (tmp_path / "e.csv").exists()
