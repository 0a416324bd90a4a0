"""The run config of each command that trains (train, distill, slim): from its flags, a YAML file, or the run to resume.

What the CLI's flags mean is decided here, so a Python user gets the same
config, the same refusals and the same resume rules as ``ddsm train``,
``ddsm distill`` and ``ddsm slim``. Each returns a validated
:class:`~ddsm.config.RunConfig`; :class:`ddsm.train.Trainer` runs any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddsm.checkpoint import data_config_for, load_supernet
from ddsm.config import (DEFAULT_WIDTHS, RunConfig, apply_overrides, check_width_set, load_run_config, load_yaml,
                         validate)
from ddsm.distill import student_config
from ddsm.errors import DDSMError
from ddsm.integrations.diffusers_folder import model_config_for, read_diffusers_folder


#: what each run kind is called, and the command that resumes it (by the section its config holds)
_KINDS = {"distill": ("a distillation", "ddsm distill"), "slim": ("a slim run", "ddsm slim"),
          None: ("a training run", "ddsm train")}


def _saved(out: str | Path, section: str) -> dict[str, Any] | None:
    """The resolved config of the run in ``out`` (a mapping), None if there is none; a run without ``section`` is
    refused, naming what it is and the command that resumes it."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return None
    doc = load_yaml(path)
    if not doc.get(section):
        found = next((k for k in ("distill", "slim") if doc.get(k)), None)
        what, command = _KINDS[found]
        raise DDSMError(f"{str(out)!r} holds {what}, not {_KINDS[section][0]}; resume it with {command} --out "
                        f"{str(out)!r} --resume")
    return dict(doc)


def _without_model(config_file: str | Path | None, why: str) -> dict[str, Any]:
    """The config file's sections (none without a file), refusing a model section: the command makes the model."""
    doc = load_yaml(config_file) if config_file else {}
    if "model" in doc:
        raise DDSMError(f"config file {config_file!r} has a model section; {why}")
    return doc


def train_run_config(out: str | Path, *, config_file: str | Path | None = None, resume: bool = False,
                     data: str | None = None, iters: int | None = None, seed: int | None = None) -> RunConfig:
    """``ddsm train``: the YAML file (or, resuming without one, the run's own config) with the flags applied."""
    if resume and config_file is None and (Path(out) / "config.json").is_file():
        config_file = str(Path(out) / "config.json")  # JSON is a subset of YAML
    return load_run_config(config_file, **{"data.source": data, "train.iters": iters, "train.seed": seed})


def distill_run_config(out: str | Path, *, teacher: str | None = None, steps: int | None = None,
                       spacing: str | None = None, sub_steps: int | None = None,
                       config_file: str | Path | None = None, resume: bool = False, iters: int | None = None,
                       seed: int | None = None, prediction: str | None = None,
                       guidance_scale: float | None = None) -> RunConfig:
    """``ddsm distill``: a K-step student of ``teacher`` (its model is the teacher's, predicting ``prediction``:
    v by default; ``guidance_scale``: of the teacher's guided transition), or the run in ``out`` to resume."""
    saved = _saved(out, "distill") \
        if resume and config_file is None else None
    if saved is not None:
        run = validate(RunConfig, saved, source=str(Path(out) / "config.json"))
        if teacher is not None:
            t = load_supernet(teacher)
            if t.fingerprint != run.model.student.teacher:
                raise DDSMError(f"--teacher {teacher!r} has architecture {t.fingerprint}, but the student in "
                                f"{str(out)!r} was distilled from {run.model.student.teacher}; drop --teacher to use "
                                "the run's own")
        clash = [f"--{k} {v}" for k, v in {"steps": steps, "spacing": spacing, "sub-steps": sub_steps,
                                             "prediction": prediction, "guidance-scale": guidance_scale}.items()
                 if v is not None]
        if clash:
            raise DDSMError(f"{', '.join(clash)} cannot change on --resume; the run keeps its recipe")
        doc = run.model_dump(mode="json")
    else:
        if teacher is None or steps is None:
            raise DDSMError("give --teacher CKPT and --steps K (or --resume an existing distillation)")
        doc = _without_model(config_file, "a student's model is its teacher's (drop the section)")
        t = load_supernet(teacher)
        if t.config.diffusers is not None:
            raise DDSMError(f"--teacher {teacher!r} is a slimmed diffusers model (ddsm slim); ddsm distill takes a "
                            "supernet ddsm trained (ddsm train or a shipped name such as 'digits')")
        dist = dict(doc.get("distill") or {})
        if dist.get("teacher") not in (None, teacher) or dist.get("steps") not in (None, steps):
            raise DDSMError("distill.teacher and distill.steps come from --teacher and --steps; drop them from the config")
        dist.update({"teacher": teacher, "steps": steps,
                     **({"spacing": spacing} if spacing is not None else {}),
                     **({"sub_steps": sub_steps} if sub_steps is not None else {})})
        model = student_config(t.config, steps, dist.get("spacing", "linspace"), prediction=prediction or "v_prediction",
                               guidance_scale=guidance_scale)
        doc = {**doc, "model": model.model_dump(mode="json"), "distill": dist}
        doc.setdefault("data", data_config_for(teacher).model_dump(mode="json"))
    apply_overrides(doc, **{"train.iters": iters, "train.seed": seed})
    return validate(RunConfig, doc, source="distillation config")


def slim_run_config(out: str | Path, *, source: str | None = None, config_file: str | Path | None = None,
                    resume: bool = False, data: str | None = None, widths: tuple[float, ...] = (),
                    order: str | None = None, hidden_weight: float | None = None, unfreeze_full: bool = False,
                    iters: int | None = None, seed: int | None = None, null_label: str | None = None) -> RunConfig:
    """``ddsm slim``: the diffusers model in ``source`` made a supernet of ``widths`` (1 added), or the run to resume.

    ``null_label`` 'last': a class-conditional model's last class embedding is its unconditional label."""
    saved = _saved(out, "slim") \
        if resume and config_file is None else None
    if saved is not None:
        doc = saved
        clash = [flag for flag, v in (("--width", widths), ("--order", order), ("--unfreeze-full", unfreeze_full),
                                      ("--data", data), ("--hidden-weight", hidden_weight is not None),
                                      ("--null-label", null_label)) if v]
        if source is not None and source != doc["slim"]["source"]:
            clash.append("--from-diffusers")
        if clash:
            raise DDSMError(f"{', '.join(clash)} cannot change on --resume; the run keeps its recipe")
    else:
        if source is None:
            raise DDSMError("give --from-diffusers FOLDER (or --resume an existing slim run)")
        doc = _without_model(config_file, "a slimmed model's is its folder's (drop the section; widths come from "
                                          "--width)")
        sl = dict(doc.get("slim") or {})
        if sl.get("source") not in (None, source):
            raise DDSMError("slim.source comes from --from-diffusers; drop it from the config")
        sl["source"] = source
        if order is not None:
            sl["order"] = order
        if hidden_weight is not None:
            sl["hidden_weight"] = hidden_weight
        doc["slim"] = sl
        if data is not None:
            doc["data"] = {**(doc.get("data") or {}), "source": data}
        ws = DEFAULT_WIDTHS
        if widths:  # checked where it enters: NaN or 1.5 would otherwise reach the channel arithmetic
            try:
                ws = check_width_set(tuple({*widths, 1.0}))
            except ValueError as e:
                raise DDSMError(f"--width: {e}") from None
        model = model_config_for(read_diffusers_folder(source), ws, freeze_full=not unfreeze_full,
                                 null_label=null_label == "last")
        doc["model"] = model.model_dump(mode="json")
        if not model.diffusers.has_null_label:
            # no null label: nothing to drop labels to, so fine-tuning keeps every label unless told otherwise
            doc["train"] = {"label_dropout": 0.0, **(doc.get("train") or {})}
    apply_overrides(doc, **{"train.iters": iters, "train.seed": seed})
    return validate(RunConfig, doc, source="slim config")
