"""The hardened YAML reader: the one way a config file (YAML, or JSON as a subset of it) is read.

PyYAML's SafeLoader (no object construction) with limits on size, aliases,
expanded values and nesting, each refused with a one-line DDSMError. A
user's JSON file outside a config (a diffusers folder's ``config.json``) is
read by :func:`ddsm.io.read_json` with the same size and nesting limits.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ddsm.errors import DDSMError
from ddsm.limits import MAX_CONFIG_BYTES, MAX_YAML_ALIASES, MAX_YAML_NODES, check_nesting, clip, short


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader counting aliases as they are composed (refused past :data:`MAX_YAML_ALIASES`)."""

    def __init__(self, stream, where: str) -> None:
        super().__init__(stream)
        self.where = where
        self.n_aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.n_aliases += 1
            if self.n_aliases > MAX_YAML_ALIASES:
                raise DDSMError(f"config file {self.where} uses more than {MAX_YAML_ALIASES} YAML aliases (*name); "
                                "write the values out instead")
        return super().compose_node(parent, index)


def _expanded_size(root: yaml.Node, where: str) -> int:
    """Values of the document with every alias expanded; a DDSMError past :data:`MAX_YAML_NODES` or on a cycle."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise DDSMError(f"config file {where} holds a recursive YAML alias (a value that contains itself)")
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if n > MAX_YAML_NODES:
            raise DDSMError(f"config file {where} expands to more than {MAX_YAML_NODES} values (YAML aliases "
                            "included); a config is far smaller")
        sizes[key] = n
        return n

    return size(root)


def load_yaml(path: str | Path) -> dict:
    """Safe-load a YAML mapping: the one reader of config files (YAML, or JSON as a subset of it).

    One-line DDSMError for an unreadable, oversized (> :data:`~ddsm.limits.MAX_CONFIG_BYTES`),
    non-UTF-8, malformed, alias-bombed, empty or non-mapping file.
    """
    path = Path(path)
    where = short(str(path), 120)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise DDSMError(f"cannot read config file {where}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise DDSMError(f"config file {where} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; "
                        "config files are limited to that size")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DDSMError(f"config file {where} is not UTF-8 text (byte {e.start}); give a YAML file") from None
    if path.suffix.lower() == ".json" and text.strip():
        # JSON read as YAML 1.1 turns exponent floats without a dot (json's 1e-05) into strings.
        import json

        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise DDSMError(clip(f"malformed JSON in {where}: {e}")) from None
        if not isinstance(data, dict):
            raise DDSMError(f"config file {where} must hold a mapping, got {type(data).__name__}")
        check_nesting(data, f"config file {where}")
        return data
    loader = _LimitedLoader(text, where)
    try:
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, where)
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DDSMError(clip(f"malformed YAML in {where}{at}: {getattr(e, 'problem', None) or e}")) from None
    except RecursionError:
        raise DDSMError(f"config file {where} is nested too deeply to be a config") from None
    finally:
        loader.dispose()
    if data is None:
        raise DDSMError(f"config file {where} is empty; give a YAML mapping of settings")
    if not isinstance(data, dict):
        raise DDSMError(f"config file {where} must hold a mapping, got {type(data).__name__}")
    check_nesting(data, f"config file {where}")
    return data
