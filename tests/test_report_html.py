"""`ddsm report`: one offline HTML page per search, checked as data and in a real (headless Chromium) browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import TINY_SEARCH_SPACE, assert_bad_input, invoke, write_space

SPACE = {**TINY_SEARCH_SPACE, "seeding": {**TINY_SEARCH_SPACE["seeding"], "sensitivity": True, "knapsack_budgets": 2}}


@pytest.fixture(scope="module")
def searched(trained_run, tmp_path_factory):
    """A finished tiny search, its export with a verdict, and a `ddsm verdict` CSV of two of its members."""
    from ddsm.data import load_digits
    from ddsm.metrics.featurenet import train_featurenet

    root = tmp_path_factory.mktemp("html")
    search, export = root / "search", root / "export"
    r = invoke("search", "--space", write_space(root / "space.yaml", seeding=SPACE["seeding"]), "--checkpoint",
               trained_run, "--out", search, "--no-progress")
    assert r.exit_code == 0, r.output
    fnet = root / "features.safetensors"
    train_featurenet(load_digits(size=8), seed=0, epochs=1, progress=False).save(fnet)
    r = invoke("export", search, "--checkpoint", trained_run, "--out", export, "--repeats", "1", "--warmup", "0",
               "--num", "2", "--no-progress", "--verdict", "50", "--featurenet", fnet)
    assert r.exit_code == 0, r.output
    front = pd.read_csv(export / "front.csv")
    files = [str(export / f) for f in front["schedule"].iloc[[0, -1]]]
    verdict = root / "verdict.csv"
    r = invoke("verdict", "--checkpoint", trained_run, "--schedule", files[0], "--schedule", files[1], "--width", "0.5",
               "--num", "50", "--featurenet", fnet, "--search-seeds", "0:2", "--no-progress", "--out", verdict)
    assert r.exit_code == 0, r.output
    return {"search": search, "export": export, "verdict": verdict, "front": front, "checkpoint": trained_run}


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script id="ddsm-data" type="application/json">(.*?)</script>', text, re.S)
                      .group(1).replace("<\\/", "</"))


def test_the_report_is_one_offline_file_with_every_member(searched, tmp_path):
    out = tmp_path / "report.html"
    r = invoke("report", searched["search"], "--export", searched["export"], "--verdict", searched["verdict"],
               "--samples", "4", "--out", out)
    assert r.exit_code == 0, r.output
    text = out.read_text(encoding="utf-8")
    # nothing is fetched when the page is viewed: no external script, style, image or frame
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(https?:)?//", text)
    assert "Plotly" in text and '<meta name="generator" content="ddsm report' in text
    data, front = page_data(out), searched["front"]
    assert len(data["front"]) == len(front)
    for m, row in zip(data["front"], front.to_dict(orient="records")):
        assert m["passes"][0]["values"] == json.loads(f"[{row['widths']}]")
        assert m["file"] == str(searched["export"] / row["schedule"]) and row["schedule"] in m["command"]
        assert m["grid"].startswith("data:image/png;base64,") and m["seconds"] == pytest.approx(row["seconds"])
    # the verdict CSV judged the cheapest and the most expensive member (by file), and width 0.5 (no member)
    judged = [m["rank"] for m in data["front"] if m["verdict"] is not None]
    assert judged == sorted({1, len(front)})
    assert {p["member"] for p in data["verdict"]["points"]} == {-1, 0, len(front) - 1}
    assert data["history"] and [h["generation"] for h in data["history"]] == list(range(len(data["history"])))
    assert data["sensitivity"] and data["full"]["grid"].startswith("data:image/png")


def test_an_export_verdict_is_used_when_no_csv_is_given_and_a_report_is_replaced(searched, tmp_path):
    out = tmp_path / "report.html"
    for samples in ("0", "2"):  # a second run replaces the first report
        r = invoke("report", searched["search"], "--export", searched["export"], "--samples", samples, "--out", out)
        assert r.exit_code == 0, r.output
    data = page_data(out)
    assert all(m["verdict"] is not None for m in data["front"])  # export --verdict judged every member
    assert all(m["grid"] is not None for m in data["front"])
    r = invoke("report", searched["search"], "--out", tmp_path / "bare.html")
    assert r.exit_code == 0 and "no sample grids" in r.output
    assert page_data(tmp_path / "bare.html")["front"][0]["file"] is None


def test_bad_report_input_is_one_line_and_writes_nothing(searched, tmp_path):
    s = searched["search"]
    out = tmp_path / "r.html"
    assert_bad_input(invoke("report", searched["export"], "--out", out), "holds no search")
    other = tmp_path / "other.csv"
    pd.read_csv(searched["verdict"]).assign(search_seeds="0..255").to_csv(other, index=False)
    assert_bad_input(invoke("report", s, "--verdict", other, "--out", out), "another search", "0..255", "0..1")
    renamed = tmp_path / "renamed.csv"
    v = pd.read_csv(searched["verdict"])
    v.loc[v["schedule"].str.endswith(".json"), "share"] = 0.123456
    v.assign(schedule=v["schedule"].map(lambda n: Path(n).name if n.endswith(".json") else n)).to_csv(renamed, index=False)
    assert_bad_input(invoke("report", s, "--verdict", renamed, "--out", out), "another search", "none of")
    assert_bad_input(invoke("report", s, "--verdict", searched["export"] / "front.csv", "--out", out),
                     "not a ddsm verdict CSV")
    assert_bad_input(invoke("report", s, "--samples", "-1", "--out", out), "--samples -1")
    assert_bad_input(invoke("report", s, "--out", tmp_path / "r.txt"), ".html")
    assert not out.exists()
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    assert_bad_input(invoke("report", s, "--out", foreign), "not a ddsm report", "not overwritten")
    assert foreign.read_text() == "<html>my notes</html>"


@pytest.mark.browser
def test_the_report_renders_in_a_browser_and_hover_shows_a_member(searched, tmp_path):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.common.by import By

    from ddsm.report.screenshot import browser_paths, front_points, headless_chromium, hover_member, wait_ready

    if browser_paths() is None:
        pytest.skip("no headless browser here: apt-get install chromium chromium-driver")
    out = tmp_path / "report.html"
    r = invoke("report", searched["search"], "--export", searched["export"], "--samples", "4", "--out", out)
    assert r.exit_code == 0, r.output
    driver = headless_chromium()
    try:
        driver.get(out.resolve().as_uri())
        wait_ready(driver)
        front = searched["front"]
        assert len(front_points(driver)) == len(front)  # as many drawn front points as front.csv has rows
        k = len(front)
        assert hover_member(driver, k) == f"#{k} of {len(front)}"
        shown = driver.find_element(By.ID, "detail-widths").text
        assert shown == "widths per step: " + ", ".join(f"{float(w):g}" for w in front["widths"].iloc[k - 1].split(","))
        assert "front-" in driver.find_element(By.ID, "detail").text  # its file name and sampling command
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        driver.quit()
