"""The public API is what the docs import: every import in README.md and experiments/README.md resolves to a name
its module lists in ``__all__``, and internals are not exported."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import ddsm

ROOT = Path(__file__).resolve().parents[1]
#: the packages whose __all__ is public (ddsm's docstring says so)
PUBLIC = {"ddsm", "ddsm.search", "ddsm.metrics", "ddsm.diffusion", "ddsm.integrations.diffusers",
          "ddsm.integrations.slim_pipeline"}


def _doc_imports() -> list[tuple[str, str]]:
    found = []
    for doc in ("README.md", "experiments/README.md"):
        for module, names in re.findall(r"^\s*from (ddsm[\w.]*) import ([\w, ]+)$", (ROOT / doc).read_text(), re.M):
            found += [(module, n.strip()) for n in names.split(",") if n.strip()]
    return sorted(set(found))


@pytest.mark.parametrize("module, name", _doc_imports())
def test_every_documented_import_is_public(module, name):
    assert module in PUBLIC, f"the docs import from {module}, which is not a public package"
    mod = importlib.import_module(module)
    assert name in getattr(mod, "__all__", ()), f"{module}.{name} is documented but not in its __all__"
    assert getattr(mod, name) is not None


def test_the_top_level_names_resolve_and_internals_are_not_exported():
    for name in ddsm.__all__:
        assert getattr(ddsm, name) is not None
    search = importlib.import_module("ddsm.search")
    assert not {"solve_mckp", "initial_population", "build_algorithm"} & set(search.__all__)
    assert {"Backbone", "BACKBONES", "Trainer", "train_run_config", "distill_run_config", "slim_run_config"} <= \
        set(ddsm.__all__)
