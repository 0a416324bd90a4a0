"""The report modules on their own (not through the CLI): front table, budgets, families, out folders, figures."""

from __future__ import annotations

import math

import pytest

from ddsm.errors import DDSMError
from ddsm.report.analysis import families, full_width_quality, sensitivity
from ddsm.report.export import best_under, format_table, front_table
from ddsm.report.outdir import EXPORT_KIND, PLOTS_KIND, check_out_dir, report_done, writing_report
from ddsm.report.plots import plot_front, plot_sensitivity, plot_widths
from ddsm.search import SearchConfig, SyntheticEvaluatorFactory, load_search, run_search

COSTS = {0.25: 1 / 16, 0.5: 1 / 4, 0.75: 9 / 16, 1.0: 1.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("units") / "search"
    space = SearchConfig(sampler={"steps": 6}, segments=3, population=6, generations=3, budget=0.6,
                         seeding={"n_random": 1, "knapsack_budgets": 2, "two_segment": [0.5]})
    run_search(space, evaluator_factory=SyntheticEvaluatorFactory(), costs=COSTS, out_dir=out, progress=False,
               supernet="net-a", device="cpu")
    return load_search(out)


def test_front_table_prices_every_member_with_the_search_costs(run):
    table = front_table(run, run.costs)
    assert list(table["rank"]) == list(range(1, len(run.front) + 1))
    for row, m in zip(table.to_dict(orient="records"), run.front.to_dict(orient="records")):
        assert row["macs_per_image"] == sum(COSTS[w] for w in m["widths"]) == m["cost"]
        assert row["flop_saving"] == pytest.approx(1 - m["share"]) and row["schedule"].startswith(f"front-{row['rank']:02d}")


def test_best_under_picks_the_best_member_within_each_budget(run):
    table = front_table(run, run.costs)
    chosen = best_under(table, [run.budget], quality="proxy")
    assert chosen == {run.budget: int(table["rank"].iloc[table["proxy"].argmin()])}
    with pytest.raises(DDSMError, match="no front member costs that little"):
        best_under(table, [1e-6], quality="proxy")
    with pytest.raises(DDSMError, match="must be a positive cost share"):
        best_under(table, [-1], quality="proxy")
    timed = table.assign(seconds=1.0, speedup=1.0, wallclock_saving=0.0)
    text = format_table(timed, quality="proxy")
    assert len(text.splitlines()) == len(table) + 1 and max(len(line) for line in text.splitlines()) <= 100


def test_families_full_width_and_sensitivity_come_from_the_log(run):
    fams = {f.name: f for f in families(run)}
    uniform = fams["uniform width"]
    assert len(uniform.genomes) == 4 and all(math.isfinite(q) for q in uniform.rows["proxy"])
    q, how = full_width_quality(run)
    assert (q, how) == (0.0, "evaluated") or how == "0 by definition"
    sens = sensitivity(run)
    assert set(sens["gene"]) == {0, 1, 2} and (sens["degradation"] >= 0).all()  # narrowing never helps here


def test_out_dir_refuses_foreign_folders_and_drops_stale_files(run, tmp_path):
    identity = run.identity()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("mine")
    with pytest.raises(DDSMError, match="not empty and holds no ddsm report"):
        check_out_dir(foreign, kind=EXPORT_KIND, identity=identity)
    out = tmp_path / "report"

    def write(names):
        with writing_report(out, kind=EXPORT_KIND, identity=identity) as report:
            for n in names:
                (out / n).write_text("{}")
            report.files += names

    write(["old.json", "keep.json"])
    assert report_done(out, EXPORT_KIND) and not report_done(out, PLOTS_KIND)
    assert check_out_dir(out, kind=EXPORT_KIND, identity=identity) == ["old.json", "keep.json"]
    assert check_out_dir(out, kind=PLOTS_KIND, identity=identity) == []
    write(["keep.json"])
    assert not (out / "old.json").exists() and (out / "keep.json").exists()
    assert sorted(p.name for p in out.iterdir()) == [".ddsm.lock", "export.json", "keep.json"]
    with pytest.raises(DDSMError, match="report of another search"):
        check_out_dir(out, kind=EXPORT_KIND, identity={**identity, "search": "/elsewhere"})


def test_a_killed_report_is_recognised_and_replaced(run, tmp_path):
    """A report killed mid-write leaves a manifest saying complete: false and temp files; its rerun replaces it."""
    identity = run.identity()
    out = tmp_path / "report"
    with writing_report(out, kind=EXPORT_KIND, identity=identity) as report:
        (out / "a.json").write_text("{}")
        report.files.append("a.json")
    with pytest.raises(KeyboardInterrupt):
        with writing_report(out, kind=EXPORT_KIND, identity=identity) as report:
            (out / "b.json").write_text("{}")
            (out / ".front.csv.abcd1234.tmp").write_text("")  # what a kill inside atomic_path leaves
            raise KeyboardInterrupt
    assert not report_done(out, EXPORT_KIND)
    assert check_out_dir(out, kind=EXPORT_KIND, identity=identity) == ["a.json"]  # the old files stay removable
    with writing_report(out, kind=EXPORT_KIND, identity=identity) as report:
        (out / "b.json").write_text("{}")
        report.files.append("b.json")
    assert report_done(out, EXPORT_KIND)
    assert sorted(p.name for p in out.iterdir()) == [".ddsm.lock", "b.json", "export.json"]
    only_tmp = tmp_path / "only-tmp"  # killed before its first manifest: nothing but a 0-byte temp file
    only_tmp.mkdir()
    (only_tmp / ".export.json.zz9_0000.tmp").write_text("")
    assert check_out_dir(only_tmp, kind=EXPORT_KIND, identity=identity) == []


def test_figures_are_written_as_png_and_svg(run, tmp_path):
    files = plot_front(run, tmp_path) + plot_widths(run, tmp_path) + plot_sensitivity(run, tmp_path)
    assert sorted(p.name for p in files) == ["front.png", "front.svg", "sensitivity.png", "sensitivity.svg",
                                             "widths.png", "widths.svg"]
    assert all(p.stat().st_size > 1000 for p in files)
