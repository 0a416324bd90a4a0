"""The teacher-relative proxy: 0 for the teacher, larger the further a candidate's samples drift."""

from __future__ import annotations

import copy

import pytest
import torch

from ddsm.config import DiffusionConfig
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.errors import DDSMError
from ddsm.metrics.featurenet import train_featurenet
from ddsm.metrics.proxy import TeacherProxy
from ddsm.samplers import SamplerConfig, generate, make_sampler
from ddsm.samplers.batched import SharingStats

STEPS = 5
SEEDS = list(range(12))


def _sampler(kind: str = "ddim"):
    return make_sampler(NoiseSchedule(DiffusionConfig(num_timesteps=50)), SamplerConfig(kind=kind, steps=STEPS))


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_the_teacher_scores_exactly_zero_and_slimmer_schedules_more(random_supernet, kind):
    model, sampler = random_supernet(), _sampler(kind)
    proxy = TeacherProxy(model, sampler, SEEDS)
    assert proxy.teacher_widths == (1.0,) * STEPS
    assert proxy.score(proxy.teacher()) == {"proxy": 0.0, "proxy_pixel": 0.0}
    # Resampling the teacher on the same seeds gives the same samples: common random numbers.
    again = generate(model, sampler, 1.0, SEEDS)
    assert proxy.score(again)["proxy"] < 1e-10
    narrow = proxy.score(generate(model, sampler, 0.25, SEEDS))["proxy"]
    late = proxy.score(generate(model, sampler, [1.0] * (STEPS - 1) + [0.25], SEEDS))["proxy"]
    assert narrow > late > 0


def test_the_proxy_grows_with_a_perturbation_of_the_model(random_supernet):
    model, sampler = random_supernet(), _sampler()
    proxy = TeacherProxy(model, sampler, SEEDS)
    scores = []
    for scale in (0.0, 0.01, 0.03, 0.1):
        perturbed = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in perturbed.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * scale)
        scores.append(proxy.score(generate(perturbed, sampler, 1.0, SEEDS))["proxy"])
    assert scores[0] == 0.0
    assert scores == sorted(scores) and scores[1] > 0


def test_teacher_samples_are_computed_once(random_supernet):
    proxy = TeacherProxy(random_supernet(), _sampler(), SEEDS)
    stats = SharingStats()
    first = proxy.teacher(stats)
    assert proxy.teacher(stats) is first
    assert stats.image_evals == len(SEEDS) * STEPS


def test_the_feature_term_is_added_with_its_weight(random_supernet, tiny_data):
    model, sampler = random_supernet(), _sampler()
    net = train_featurenet(tiny_data, seed=0, epochs=1, num_features=8, channels=4)
    proxy = TeacherProxy(model, sampler, SEEDS, feature_net=net, feature_weight=0.5)
    assert proxy.score(proxy.teacher()) == {"proxy": 0.0, "proxy_pixel": 0.0, "proxy_feature": 0.0}
    s = proxy.score(generate(model, sampler, 0.25, SEEDS))
    assert s["proxy_feature"] > 0
    assert s["proxy"] == pytest.approx(s["proxy_pixel"] + 0.5 * s["proxy_feature"])


def test_bad_settings_are_one_line_errors(random_supernet):
    model, sampler = random_supernet(), _sampler()
    with pytest.raises(DDSMError, match="needs a feature net"):
        TeacherProxy(model, sampler, SEEDS, feature_weight=1.0)
    with pytest.raises(DDSMError, match=">= 0"):
        TeacherProxy(model, sampler, SEEDS, feature_weight=-1.0)
    proxy = TeacherProxy(model, sampler, SEEDS)
    with pytest.raises(DDSMError, match="teacher's are"):
        proxy.score(torch.zeros(3, 1, 8, 8))
