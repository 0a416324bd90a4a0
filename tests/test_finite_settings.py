"""Every float of every config model refuses NaN and +-inf where it enters (one mechanism: the shared config base)."""

from __future__ import annotations

import importlib
import pkgutil
import typing

import pytest
import yaml
from pydantic import BaseModel

import ddsm
from ddsm.config import _Frozen

from conftest import run_config_dict
from cli_helpers import assert_bad_input, invoke


def _config_models() -> list[type[BaseModel]]:
    for info in pkgutil.walk_packages(ddsm.__path__, "ddsm."):
        if not info.name.endswith("__main__"):  # running the CLI is not importing it
            importlib.import_module(info.name)
    seen, todo = [], [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("ddsm.") and sub not in seen:
                seen.append(sub)
    return seen


def _has_float(annotation) -> bool:
    return annotation is float or any(_has_float(a) for a in typing.get_args(annotation))


def test_every_config_model_refuses_nan_and_infinity_in_every_float():
    models = _config_models()
    assert len(models) >= 20 and _Frozen in models  # the walk found the configs (RunConfig, SearchConfig, ...)
    floats = 0
    for model in models:
        assert issubclass(model, _Frozen), f"{model.__qualname__} does not inherit the shared config base"
        assert model.model_config.get("allow_inf_nan") is False, model.__qualname__
        for name, field in model.model_fields.items():
            if not _has_float(field.annotation):
                continue
            floats += 1
            loosened = [m for m in field.metadata if getattr(m, "allow_inf_nan", None) is True]
            assert not loosened, f"{model.__qualname__}.{name} accepts NaN/inf"
    assert floats >= 30


@pytest.mark.parametrize("key, value", [("lr", ".inf"), ("weight_decay", ".inf"), ("grad_clip", ".nan"),
                                        ("distill_weight", "-.inf")])
def test_an_infinite_training_setting_is_refused_in_one_line_and_nothing_is_written(tmp_path, key, value):
    text = yaml.safe_dump(run_config_dict()).replace("train:\n", f"train:\n  {key}: {value}\n", 1)
    path = tmp_path / "run.yaml"
    path.write_text(text)
    r = invoke("train", "--config", path, "--out", tmp_path / "run", "--no-progress")
    assert_bad_input(r, f"train.{key}", "finite number")
    assert not (tmp_path / "run").exists()
