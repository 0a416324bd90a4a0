"""The verdict: held-out seeds (never the search's), exact self-comparisons, and bad input in one line."""

from __future__ import annotations

import pytest

from ddsm.checkpoint import load_supernet
from ddsm.data import load_digits
from ddsm.errors import DDSMError
from ddsm.metrics.featurenet import train_featurenet
from ddsm.metrics.fid import reference_images
from ddsm.metrics.verdict import FULL, METRICS, Verdict, VerdictSettings, check_disjoint, format_verdict
from ddsm.plan import StepPlan
from ddsm.samplers import SamplerConfig
from ddsm.search import SearchConfig, shipped_spaces

from cli_helpers import assert_bad_input, invoke


def test_verdict_seeds_never_overlap_search_seeds():
    with pytest.raises(DDSMError, match=r"overlap the search's seeds 0..63 \(at 10..63\)"):
        check_disjoint(range(10, 20_000), range(0, 64))
    check_disjoint(range(64, 100), range(0, 64))  # adjacent is fine
    with pytest.raises(DDSMError, match="overlap"):
        check_disjoint(range(0, 10), [range(100, 200), range(5, 6)])
    with pytest.raises(DDSMError, match="overlap"):
        VerdictSettings(seed=0, teacher_seed=500, num=600)  # the teacher reference may not reuse verdict seeds
    s = VerdictSettings()
    for name in shipped_spaces():  # the defaults keep clear of every shipped search's seeds
        ev = SearchConfig.load(name).evaluator
        check_disjoint(s.seeds, range(ev.seed, ev.seed + ev.num_samples))
        check_disjoint(s.teacher_seeds, range(ev.seed, ev.seed + ev.num_samples))


@pytest.fixture(scope="module")
def judged(trained_run):
    net = load_supernet(trained_run)
    data = load_digits(size=8)
    fn = train_featurenet(data, seed=0, epochs=1, progress=False)
    settings = VerdictSettings(num=60, teacher_num=60, draws=20)
    v = Verdict(net, SamplerConfig(kind="ddim", steps=3), fn, reference_images(data, "all"), settings,
                search_seeds=range(0, 64))
    full = StepPlan((1.0,) * 3)
    return v.score({"narrow": StepPlan((0.25,) * 3), "full again": full})


def test_a_schedule_against_itself_differs_by_exactly_zero(judged):
    for m in judged.metrics:
        d = judged.compare("full again", FULL, m)
        assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0), m
        assert not judged.compare("narrow", "narrow", m).excludes(0.0)
        iv = judged.interval("narrow", m)
        assert iv.low <= iv.high and iv.n == 60
    assert set(judged.metrics) == set(METRICS) - {"class_accuracy"}  # digits have labels: confidence is reported;
    # class accuracy is for class-conditional models only


def test_a_set_statistics_own_interval_holds_its_value(judged):
    from ddsm.metrics.verdict import SET_STATISTICS

    for m in SET_STATISTICS:
        raw = judged.draws["narrow"][m]
        iv = judged.interval("narrow", m)
        assert iv.low <= iv.value <= iv.high, m  # resampling bias removed: the interval is around the value
        assert iv.high - iv.low == pytest.approx(raw.interval().high - raw.interval().low, rel=1e-9, abs=1e-12) \
            or (m in ("fid", "teacher_fid") and iv.low == 0.0), m  # the spread is the resamples' own
    fid = judged.draws["narrow"]["fid"]
    assert fid.draws.mean() > fid.value  # why: duplicated seeds inflate a resample's FID


def test_the_table_and_its_plain_lines(judged):
    table = judged.table(against={"narrow": "full again"})
    assert set(table["schedule"]) == {FULL, "narrow", "full again"} and len(table) == 3 * len(judged.metrics)
    text = format_verdict(table)
    assert "narrow" in text and "full width" in text
    assert "no significant difference from full width in any metric" in text  # "full again" is full width
    assert max(len(line) for line in text.splitlines()) <= 100  # readable in a 100-column terminal


def test_bad_verdict_input_is_one_line_and_writes_nothing(trained_run, tmp_path):
    out = tmp_path / "v.csv"
    base = ["verdict", "--checkpoint", trained_run, "--width", "0.25", "--steps", "3", "--no-progress", "--out", out]
    assert_bad_input(invoke(*base, "--num", "10"), "at least 50 samples", "num=10")
    assert_bad_input(invoke(*base, "--metric", "fidd"), "'fidd' is not a verdict metric", "teacher_fid")
    assert_bad_input(invoke(*base, "--seed", "0", "--search-seeds", "0:64"), "overlap the search's seeds 0..63")
    assert_bad_input(invoke(*base, "--featurenet", "digits"), "feature net", "digits")  # made for 16x16 digits
    assert_bad_input(invoke(*base, "--search-seeds", "x"), "START:STOP")
    assert not out.exists()


def _verdict_rows(name: str, share: float, worse: bool, metric: str = "fid") -> dict:
    d = 1.0 if worse else 0.1
    return {"schedule": name, "share": share, "metric": metric, "n": 500, "vs_full": d,
            "vs_full_low": d - 0.5, "vs_full_high": d + 0.5, "differs_from_full": worse}


def test_the_no_loss_sentence_names_the_cheapest_safe_schedule_and_whether_it_beats_the_uniform_widths():
    import pandas as pd

    from ddsm.metrics.verdict import no_loss_summary

    rows = [_verdict_rows(FULL, 1.0, False), _verdict_rows("uniform width 0.25", 0.07, True),
            _verdict_rows("uniform width 0.75", 0.57, False), _verdict_rows("best under 40%", 0.39, False),
            _verdict_rows("best under 30%", 0.29, True)]
    # the per-seed proxy is above 0 for any schedule that changes a sample: it never counts as a loss
    rows.append(_verdict_rows("best under 40%", 0.39, True, "proxy"))
    text = no_loss_summary(pd.DataFrame(rows))
    assert "best under 40% at 39.0% of the FLOPs" in text and "n = 500" in text
    assert "beats the cheapest such uniform width, uniform width 0.75 at 57.0%, by 18.0%" in text
    # a better-is-higher metric counts as a loss when it is significantly lower
    rows[3] = {**_verdict_rows("best under 40%", 0.39, True, "recall"), "vs_full": -0.1, "vs_full_low": -0.2,
               "vs_full_high": -0.05}
    text = no_loss_summary(pd.DataFrame(rows))
    assert text.startswith("Cheapest schedule") and "uniform width 0.75 at 57.0%" in text and "no searched" in text
    assert "No schedule" in no_loss_summary(pd.DataFrame([rows[0], rows[1], rows[4]]))


def test_the_no_loss_sentence_with_no_quality_metric_judged_says_so():
    import pandas as pd

    from ddsm.metrics.verdict import no_loss_summary

    only_proxy = pd.DataFrame([_verdict_rows(FULL, 1.0, False, "proxy"), _verdict_rows("width 0.25", 0.07, True, "proxy")])
    assert no_loss_summary(only_proxy, uniform_prefix="width ").startswith("No quality metric was judged")
    assert no_loss_summary(only_proxy.iloc[:0]).startswith("No quality metric was judged")
