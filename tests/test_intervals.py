"""Bootstrap intervals and the distribution metrics: self-comparisons are exactly 0, one Gaussian twice looks alike."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from ddsm.errors import DDSMError
from ddsm.metrics.distribution import Candidate, Reference, mean_of
from ddsm.metrics.intervals import Draws, bootstrap_counts, interval, paired_interval


def test_bootstrap_counts_are_resamples_of_every_seed_from_one_generator():
    c = bootstrap_counts(50, 20, seed=3)
    assert c.shape == (20, 50) and (c.sum(1) == 50).all()
    assert np.array_equal(c, bootstrap_counts(50, 20, seed=3)) and not np.array_equal(c, bootstrap_counts(50, 20, 4))
    with pytest.raises(DDSMError, match="at least 2 samples"):
        bootstrap_counts(1, 20, 0)


def test_a_metric_against_itself_covers_zero_and_a_paired_self_difference_is_exactly_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    counts = bootstrap_counts(200, 100, 0)
    d = paired_interval(mean_of(x), mean_of(x), 200, counts)
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0) and not d.excludes(0.0)
    # two independent halves of one distribution: the interval of the difference covers 0
    y = rng.normal(size=200)
    assert not paired_interval(mean_of(x), mean_of(y), 200, counts).excludes(0.0)
    iv = interval(mean_of(x), 200, counts)
    assert iv.low < iv.value < iv.high and iv.n == 200
    shifted = Draws.of(mean_of(x + 1.0), 200, counts).minus(Draws.of(mean_of(x), 200, counts))
    assert shifted.excludes(0.0) and shifted.value == pytest.approx(1.0)


def test_the_statistics_equal_their_libraries_on_all_samples():
    from prdc import compute_prdc
    from torchmetrics.image.fid import _compute_fid
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.2
    c = Candidate(fake, Reference(real))
    ones = np.ones(300)
    z = lambda a: (a - real.mean(0)) / (real.std(0) + 1e-12)  # noqa: E731  (KID's standardised features)
    assert c.kid()(ones) == pytest.approx(float(poly_mmd(torch.tensor(z(real)), torch.tensor(z(fake)))), rel=1e-9)
    t = torch.tensor
    fid = _compute_fid(t(fake.mean(0)), t(np.cov(fake, rowvar=False)), t(real.mean(0)), t(np.cov(real, rowvar=False)))
    assert c.fid()(ones) == pytest.approx(float(fid), rel=1e-9)
    with contextlib.redirect_stdout(io.StringIO()):
        pr = compute_prdc(real, fake, 5)
    assert c.precision()(ones) == pr["precision"] and c.recall()(ones) == pr["recall"]


def test_kid_and_precision_recall_on_two_draws_of_one_gaussian():
    rng = np.random.default_rng(2)
    ones = np.ones(1500)
    same = Candidate(rng.normal(size=(1500, 8)), Reference(rng.normal(size=(1500, 8))))
    assert abs(same.kid()(ones)) < 0.01
    ref = Reference(rng.normal(size=(1500, 2)))  # k-NN manifolds fill out in few dimensions
    c = Candidate(rng.normal(size=(1500, 2)), ref)
    assert c.precision()(ones) > 0.95 and c.recall()(ones) > 0.95
    far = Candidate(rng.normal(size=(1500, 2)) + 4.0, ref)
    assert far.kid()(ones) > 0.5 and far.precision()(ones) < 0.2 and far.recall()(ones) < 0.2
