"""A PNG of a `ddsm report` page as a browser shows it, hovering one front member (issue 33's figure).

    python experiments/report_screenshot.py runs/quickstart/report.html \
        experiments/results/figures/report-quickstart.png --rank 10

Needs selenium (the test extra) and Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _script import run  # noqa: E402

from ddsm.report.screenshot import screenshot  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="the report's .html file")
    ap.add_argument("png", type=Path, help="the PNG to write")
    ap.add_argument("--rank", type=int, default=None, help="front member to hover (1 = cheapest)")
    a = ap.parse_args()
    path = screenshot(a.report, a.png, rank=a.rank)
    print(f"{path} ({path.stat().st_size / 1e3:.0f} kB) of {a.report} ({a.report.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    run(main)
