"""What a non-editable install carries: every package, the shipped supernets and the shipped search configs."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from ddsm.search import SearchConfig, shipped_spaces
from ddsm.search.config import space_path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ddsm").rglob("__init__.py")}
    assert listed == found | {"ddsm.search_spaces"}


def test_shipped_search_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spaces = shipped_spaces()
    assert {"digits", "digits-smoke", "digits-progressive"} <= set(spaces)
    for name, path in spaces.items():
        assert SearchConfig.load(name) == SearchConfig.load(ROOT / "search_spaces" / f"{name}.yaml")
        assert space_path(name) == path
    assert space_path("no-such-space") == Path("no-such-space")  # not shipped: the plain path, refused on read


def test_a_built_wheel_runs_the_quickstart_lookup_outside_the_source_tree(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("ddsm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ddsm/search_spaces/digits.yaml" in names and "ddsm/assets/digits.safetensors" in names
    assert "ddsm/report/page.js" in names  # the report's script travels with the wheel
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel installs by unpacking
    probe = ("import ddsm, ddsm.quickstart as q; from ddsm.search import SearchConfig; "
             "p = q.default_space(); print(ddsm.__file__); print(p); print(SearchConfig.load('digits').budget)")
    # the wheel's ddsm ahead of everything, this environment's dependencies after it, far from the source tree
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    module, space, budget = out.stdout.split()
    assert module.startswith(str(site)) and space.startswith(str(site)) and float(budget) == 0.6
