"""The search spaces that ship with ddsm, found by name, and how a joint (steps x widths) space is told apart.

``--space NAME`` and ``ddsm quickstart`` read the YAML files of
``search_spaces/`` (the package data ``ddsm.search_spaces`` of a wheel)
through :func:`space_path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddsm.config import load_yaml


def is_joint_doc(doc: Any) -> bool:
    """Whether a parsed space YAML is a joint (steps x widths) space of ``ddsm search-steps``: it lists students."""
    return isinstance(doc, dict) and "students" in doc


def shipped_spaces(*, joint: bool | None = False) -> dict[str, Path]:
    """The search configs that ship with ddsm (``search_spaces/`` of the source tree, package data of a wheel).

    ``joint`` picks the width spaces (False, of ``ddsm search``), the joint steps x widths spaces (True, of
    ``ddsm search-steps``) or both (None).
    """
    from importlib.resources import files

    root = files("ddsm.search_spaces")
    found = {p.name[: -len(".yaml")]: Path(str(p)) for p in sorted(root.iterdir(), key=lambda p: p.name)
             if p.name.endswith(".yaml")}
    if joint is None:
        return found
    return {name: path for name, path in found.items() if is_joint_doc(load_yaml(path)) == joint}


def space_path(spec: str | Path) -> Path:
    """``spec`` as a file path, or the file of the shipped search config named ``spec`` (e.g. ``digits``)."""
    path = Path(spec)
    if path.exists() or path.suffix:
        return path
    return shipped_spaces(joint=None).get(str(spec), path)

