"""Bad-input fuzz table against every ``ddsm`` command.

The promise under test: every bad input gets exactly one line on stderr that
starts with ``Error: `` and exit status 2, no traceback; nothing is written
(no new file or folder appears in the case's sandbox, or in the launch
folder, or at a path outside both that the case names) and no existing file is
changed or removed.

Each case runs in a fresh sandbox folder (its working directory), set up with
the files it needs (a YAML bomb, a pickle renamed ``.safetensors``, a
``precious.txt`` that must survive, a regular file used as a parent folder, a
copy of a small search/export/training/distillation/slim run, a tiny diffusers
model folder, a joint search, ...), then hand-edits the copies' JSON files where
the case says so (one value changed per case). The sandbox is snapshotted
(paths, sizes, mtimes, hashes of files up to 4 MiB) before and after.

Outcomes: ``ok``; ``traceback``; ``multi-line`` (exit 2 but not exactly one
``Error:`` line); ``wrong-exit`` (0 = accepted, 1 = crashed without a
traceback, ...); ``wrote`` (files left, changed or removed); ``hang`` (killed
after ``--timeout`` seconds, or past ``--mem-limit-gb`` of resident memory);
``skip`` (needs a non-root user, or a fixture that could not be built).

Modes:
  default        one ``.venv/bin/ddsm`` subprocess per case (faithful; ~2 s of imports each)
  --in-process   ddsm.cli is imported once; each case runs click.testing.CliRunner in a
                 forked child (so timeouts, memory limits and Ray daemons can be killed)

Usage:
  .venv/bin/python experiments/fuzz_cli.py                       # full table, subprocesses
  .venv/bin/python experiments/fuzz_cli.py --in-process --jobs 2
  .venv/bin/python experiments/fuzz_cli.py --only 'sample-*' --timeout 30
  .venv/bin/python experiments/fuzz_cli.py --list
  .venv/bin/python experiments/fuzz_cli.py --in-process --sample 4  # the default test suite's quarter
  .venv/bin/python experiments/fuzz_cli.py --compare experiments/results/fuzz-cli-in-process.json

Results: experiments/results/fuzz-cli.json and .csv (``-in-process`` suffix in that mode).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TOKEN_VAR = "DDSM_FUZZ_TOKEN"

# ----------------------------------------------------------------------------------------------- inputs

SEED64 = str(2**64)  # 18446744073709551616
PRECIOUS = "precious: this file must survive the fuzz case\n"

#: a search space small enough to run in seconds on the digits supernet
TINY_SPACE = """\
widths: [0.25, 0.5, 0.75, 1.0]
sampler: {kind: ddim, steps: 4}
segments: 2
budget: 0.6
objectives: {quality: proxy, cost: flops}
population: 4
generations: 1
seed: 0
seeding: {uniform: true, two_segment: [0.5], n_random: 1, sensitivity: false}
evaluator: {num_samples: 2, seed: 0, batch_size: 8}
"""

#: a training config that trains in a second (8x8 images, two levels)
TINY_CONFIG = """\
model:
  unet: {image_size: 8, base_channels: 8, channel_mults: [1, 2], group_channels: 2, attn_resolutions: [4]}
  diffusion: {num_timesteps: 50}
train: {iters: 1, batch_size: 8, checkpoint_every: 1000}
"""


def yaml_bomb(use: str = "") -> str:
    """Billion laughs: nine anchors of nine aliases each (9**9 leaves, ~0.5 KB), optionally referenced by ``use``."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n" + use


def space_with(**changes: str) -> str:
    """TINY_SPACE with top-level keys replaced by the given YAML snippets (``None``: dropped)."""
    out = []
    for line in TINY_SPACE.splitlines():
        key = line.split(":", 1)[0]
        if key in changes:
            if changes[key] is not None:
                out.append(f"{key}: {changes.pop(key)}")
            else:
                changes.pop(key)
        else:
            out.append(line)
    out += [f"{k}: {v}" for k, v in changes.items() if v is not None]
    return "\n".join(out) + "\n"


PICKLE = pickle.dumps({"state_dict": {"w": [1.0, 2.0]}, "note": "not a safetensors file"})
NOT_JSON = "this is { not json\n"


def _grey_png(side: int = 8) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side), 127).save(buf, format="PNG")
    return buf.getvalue()


GREY_PNG = _grey_png()  # a constant image: no spectrum but DC
GREY_PNG_16 = _grey_png(16)  # twice the tiny diffusers model's side

#: a joint (steps x widths) space over the tiny width space: the shipped teacher and its shipped 2-step student
TINY_JOINT = "base: space.yaml\nteacher: digits\nstudents: [digits-sfddm-k2]\n"

#: the tiny diffusers UNet2DModel folder of tests/test_diffusers_folder.py (8x8, 1 channel; T = 50, linear betas)
DIFFUSERS_FOLDER_SCRIPT = """\
import sys, torch, diffusers
torch.manual_seed(0)
diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                      norm_num_groups=4, attention_head_dim=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D")).save_pretrained(sys.argv[1])
diffusers.DDPMScheduler(num_train_timesteps=50).save_config(sys.argv[1])
"""


def package_dir() -> Path:
    """The folder of the ddsm package the cases run (found without importing it: PYTHONPATH is honoured)."""
    import importlib.util

    spec = importlib.util.find_spec("ddsm")
    locs = list(spec.submodule_search_locations or []) if spec else []
    return Path(locs[0]).resolve() if locs else ROOT / "ddsm"


class Raw(str):
    """A JSON edit written as this text, as is: ``Raw("1e309")`` (json.dumps can only spell it ``Infinity``)."""


#: an edit value that removes the key
DROP = object()
#: in an edit's string value: the sandbox's real path (a manifest that must name the sandbox's own copy)
SANDBOX = "{sandbox}"

# ----------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One bad input: ``ddsm ARGV`` run in a sandbox holding ``files``, ``dirs`` and copies of ``fixtures``.

    Set up in this order: fixtures copied, ``dirs`` made, ``files`` written (over a fixture's file; ``None``
    removes that path), ``edits`` applied to the JSON files now there, ``readonly`` folders locked.
    """

    id: str
    argv: tuple[str, ...]
    files: dict[str, str | bytes | None] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    fixtures: tuple[str, ...] = ()  # names in FIXTURES, copied into the sandbox under the same name
    readonly: tuple[str, ...] = ()  # folders chmod 0555 (meaningless as root: such cases are skipped)
    note: str = ""
    # {json file: {dotted key (list items by index): value}}; DROP removes the key, Raw(text) is written as is,
    # a callable is called (a large value is made only when the case runs), SANDBOX in a string is the sandbox
    edits: dict[str, dict[str, Any]] = field(default_factory=dict)
    outside: tuple[str, ...] = ()  # absolute paths outside the sandbox the case must not create (checked after it)

    @property
    def command(self) -> str:
        return self.argv[0] if self.argv else ""


#: fixtures built once per run by :func:`build_fixtures`, copied into the sandboxes that name them
FIXTURES = ("srch", "exp", "trun", "sched.json", "diff", "joint", "jexp", "ksched.json", "srun", "drun")

CASES: list[Case] = []


def case(id: str, *argv: str, files: dict | None = None, dirs=(), fixtures=(), readonly=(), note: str = "",
         edits: dict | None = None, outside=()) -> None:
    if any(c.id == id for c in CASES):
        raise ValueError(f"duplicate case id {id}")
    unknown = set(fixtures) - set(FIXTURES)
    if unknown:
        raise ValueError(f"case {id}: unknown fixtures {sorted(unknown)}")
    CASES.append(Case(id, tuple(str(a) for a in argv), dict(files or {}), tuple(dirs), tuple(fixtures),
                      tuple(readonly), note, dict(edits or {}), tuple(str(p) for p in outside)))


# Unwritable output locations: (suffix, extra setup). {x} is replaced by a name for the output.
def unwritable(name: str) -> list[tuple[str, str, dict, tuple]]:
    """(tag, path, files, readonly) for each unwritable place an output ``name`` can point at."""
    return [
        ("proc", f"/proc/self/{name}", {}, ()),
        ("sys", f"/sys/ddsm-fuzz-{name}", {}, ()),
        ("ro", f"ro/{name}", {}, ("ro",)),
        ("below-file", f"afile/{name}", {"afile": "a regular file, not a folder\n"}, ()),
    ]


def out_cases(cmd: str, base: list[str], name: str, *, files: dict | None = None, fixtures=(), opt="--out") -> None:
    for tag, path, extra, ro in unwritable(name):
        case(f"{cmd}-out-{tag}", cmd, *base, opt, path, files={**(files or {}), **extra},
             dirs=ro, readonly=ro, fixtures=fixtures)


def build_table() -> None:
    S = {"space.yaml": TINY_SPACE}
    C = {"tiny.yaml": TINY_CONFIG}
    P = {"precious.txt": PRECIOUS}
    pk = {"model.safetensors": PICKLE}

    # ---------------------------------------------------------------- generic click-level input
    case("cli-unknown-command", "sampel")
    case("cli-unknown-option", "sample", "--checkpoint", "digits", "--width", "1", "--out", "o", "--bogus")
    case("sample-missing-out", "sample", "--checkpoint", "digits", "--width", "1")
    case("sample-num-abc", "sample", "--checkpoint", "digits", "--width", "1", "--num", "abc", "--out", "o")
    case("sample-seed-float", "sample", "--checkpoint", "digits", "--width", "1", "--seed", "1.5", "--out", "o")
    case("sample-width-abc", "sample", "--checkpoint", "digits", "--width", "abc", "--out", "o")
    case("sample-sampler-bogus", "sample", "--checkpoint", "digits", "--width", "1", "--sampler", "euler", "--out", "o")
    case("sweep-budget-abc", "sweep", "--space", "space.yaml", "--budget", "abc", "--checkpoint", "digits",
         "--out", "sw", files=S)
    case("cost-resolution-abc", "cost", "--checkpoint", "digits", "--out", "c.json", "--resolution", "abc")

    # ---------------------------------------------------------------- train
    T = ["--config", "tiny.yaml", "--no-progress"]
    out_cases("train", T, "run", files=C)
    case("train-out-precious-file", "train", *T, "--out", "precious.txt", files={**C, **P})
    case("train-out-finished-run", "train", *T, "--out", "trun", files=C, fixtures=("trun",),
         note="a fresh start over a finished training run would overwrite it")
    case("train-out-search-folder", "train", *T, "--out", "srch", files=C, fixtures=("srch",))
    case("train-out-nonempty-unrelated", "train", *T, "--out", "mine", files={**C, "mine/precious.txt": PRECIOUS})
    case("train-resume-missing-dir", "train", "--resume", "--out", "NEW_MISSING_DIR", "--no-progress")
    case("train-resume-empty-dir", "train", "--resume", "--out", "empty", "--no-progress", dirs=("empty",))
    case("train-resume-search-folder", "train", "--resume", "--out", "srch", "--no-progress", fixtures=("srch",))
    case("train-config-missing", "train", "--config", "nope.yaml", "--out", "run")
    case("train-config-dir", "train", "--config", "cfgdir", "--out", "run", dirs=("cfgdir",))
    case("train-config-malformed", "train", "--config", "bad.yaml", "--out", "run",
         files={"bad.yaml": "model: {unet: [1, 2\n  : :\n"})
    case("train-config-list", "train", "--config", "list.yaml", "--out", "run", files={"list.yaml": "- 1\n- 2\n"})
    case("train-config-unknown-key", "train", "--config", "u.yaml", "--out", "run",
         files={"u.yaml": "model: {unet: {base_chanels: 32}}\n"})
    case("train-config-base-channels-1e8", "train", "--config", "big.yaml", "--out", "run", "--no-progress",
         files={"big.yaml": "model: {unet: {base_channels: 100000000}}\n"})
    case("train-config-timesteps-1e12", "train", "--config", "t.yaml", "--out", "run", "--no-progress",
         files={"t.yaml": "diffusion: {num_timesteps: 1000000000000}\n"},
         note="top-level diffusion: section (not under model:) as the brief wrote it")
    case("train-config-model-timesteps-1e12", "train", "--config", "t.yaml", "--out", "run", "--no-progress",
         files={"t.yaml": "model: {diffusion: {num_timesteps: 1000000000000}}\ntrain: {iters: 1}\n"})
    case("train-config-bomb", "train", "--config", "bomb.yaml", "--out", "run", files={"bomb.yaml": yaml_bomb()})
    case("train-config-bomb-in-field", "train", "--config", "bomb.yaml", "--out", "run",
         files={"bomb.yaml": yaml_bomb("model: {unet: {widths: *i}}\n")})
    case("train-config-widths-strings", "train", "--config", "w.yaml", "--out", "run",
         files={"w.yaml": 'model: {unet: {widths: ["0.5", "1.0"]}}\n'})
    # Spectral Diffusion settings (issue 15)
    for tag, text in [("down-block-unknown", "model: {unet: {down_block: haar}}\n"),
                      ("up-block-unknown", "model: {unet: {up_block: wavelet}}\n"),
                      ("spectral-weight-neg", "train: {spectral_weight: -0.5}\n"),
                      ("spectral-weight-nan", "train: {spectral_weight: .nan}\n"),
                      ("spectral-weight-inf", "train: {spectral_weight: .inf}\n"),
                      ("spectral-floor-0", "train: {spectral_floor: 0}\n"),
                      ("spectral-schedule-unknown", "train: {spectral_schedule: cosine}\n")]:
        case(f"train-config-{tag}", "train", "--config", "sd.yaml", "--out", "run", "--no-progress",
             files={"sd.yaml": text})
    case("train-spectral-constant-images", "train", "--config", "sd.yaml", "--data", "grey", "--out", "run",
         "--no-progress", files={"sd.yaml": "model: {unet: {image_size: 8, channel_mults: [1, 2]}}\n"
                                            "train: {spectral_weight: 0.5, iters: 1}\n",
                                 **{f"grey/{i}.png": GREY_PNG for i in range(4)}})
    case("train-iters-0", "train", *T, "--iters", "0", "--out", "run", files=C)
    case("train-iters-neg", "train", *T, "--iters", "-1", "--out", "run", files=C)
    case("train-seed-2p64", "train", *T, "--seed", SEED64, "--out", "run", files=C)
    case("train-seed-neg", "train", *T, "--seed", "-1", "--out", "run", files=C)
    case("train-data-missing-folder", "train", *T, "--data", "no/such/folder", "--out", "run", files=C)
    case("train-data-empty-folder", "train", *T, "--data", "imgs", "--out", "run", files=C, dirs=("imgs",))
    case("train-data-torchvision-missing", "train", *T, "--data", "torchvision:MNIST:/nonexistent", "--out", "run",
         files=C)
    case("train-device-tpu", "train", *T, "--device", "tpu", "--out", "run", files=C)
    case("train-device-cuda", "train", *T, "--device", "cuda", "--out", "run", files=C)
    # the transformer backbone and class-conditional training (issue 29)
    dit = "model: {dit: {image_size: 8, patch_size: 2, hidden_size: 32, depth: 1, num_heads: 4%s}}\ntrain: {iters: 1}\n"
    for tag, extra in [("patch-3", ", patch_size: 3"), ("width-splits-head", ", widths: [0.3, 1.0]"),
                       ("hidden-not-heads", ", hidden_size: 30"), ("mlp-ratio-nan", ", mlp_ratio: .nan"),
                       ("num-classes-neg", ", num_classes: -1"), ("with-unet", "}, unet: {image_size: 8")]:
        case(f"train-dit-{tag}", "train", "--config", "d.yaml", "--out", "run", "--no-progress",
             files={"d.yaml": dit % extra})
    case("train-label-dropout-unconditional", "train", *T, "--out", "run",
         files={"tiny.yaml": TINY_CONFIG.replace("train: {", "train: {label_dropout: 0.3, ")})
    case("train-conditional-unlabelled-folder", "train", "--config", "d.yaml", "--data", "grey", "--out", "run",
         "--no-progress", files={"d.yaml": dit % ", num_classes: 3", **{f"grey/{i}.png": GREY_PNG for i in range(4)}})

    # ---------------------------------------------------------------- sample
    SM = ["--checkpoint", "digits", "--width", "1.0", "--num", "2", "--no-progress"]
    out_cases("sample", SM, "samples")
    case("sample-out-precious-file", "sample", *SM, "--out", "precious.txt", files=P)
    case("sample-out-unrelated-files", "sample", *SM, "--out", "mine",
         files={"mine/grid.png": PRECIOUS, "mine/sample.json": PRECIOUS},
         note="a folder of someone else's files named like sample's outputs")
    case("sample-seed-2p64", "sample", *SM, "--seed", SEED64, "--out", "o")
    case("sample-seed-neg", "sample", *SM, "--seed", "-1", "--out", "o")
    SM1 = ["--checkpoint", "digits", "--width", "1.0", "--no-progress"]
    case("sample-num-1e12", "sample", *SM1, "--num", "1000000000000", "--out", "o")
    case("sample-num-0", "sample", *SM1, "--num", "0", "--out", "o")
    case("sample-num-neg", "sample", *SM1, "--num", "-5", "--out", "o")
    case("sample-batch-size-0", "sample", *SM, "--batch-size", "0", "--out", "o")
    case("sample-eta-1e308", "sample", *SM, "--eta", "1e308", "--out", "o")
    case("sample-eta-nan", "sample", *SM, "--eta", "nan", "--out", "o")
    case("sample-eta-neg", "sample", *SM, "--eta", "-1", "--out", "o")
    case("sample-eta-inf", "sample", *SM, "--eta", "inf", "--out", "o")
    case("sample-steps-0", "sample", *SM, "--steps", "0", "--out", "o")
    case("sample-steps-neg", "sample", *SM, "--steps", "-3", "--out", "o")
    case("sample-steps-over-T", "sample", *SM, "--steps", "5000", "--out", "o")
    SW = ["--checkpoint", "digits", "--num", "2", "--no-progress"]
    case("sample-width-unserved", "sample", *SW, "--width", "0.3", "--out", "o")
    case("sample-width-nan", "sample", *SW, "--width", "nan", "--out", "o")
    case("sample-width-0", "sample", *SW, "--width", "0", "--out", "o")
    case("sample-width-2", "sample", *SW, "--width", "2", "--out", "o")
    case("sample-width-and-schedule", "sample", *SW, "--width", "1", "--schedule", "sched.json", "--out", "o",
         fixtures=("sched.json",))
    case("sample-neither-width-nor-schedule", "sample", *SW, "--out", "o")
    case("sample-schedule-not-json", "sample", *SW, "--schedule", "s.json", "--out", "o", files={"s.json": NOT_JSON})
    case("sample-schedule-json-list", "sample", *SW, "--schedule", "s.json", "--out", "o", files={"s.json": "[1, 2, 3]"})
    case("sample-schedule-wrong-kind", "sample", *SW, "--schedule", "srch/search.json", "--out", "o",
         fixtures=("srch",), note="a search manifest given as a schedule")
    case("sample-schedule-missing", "sample", *SW, "--schedule", "nope.json", "--out", "o")
    case("sample-schedule-steps-clash", "sample", *SW, "--schedule", "sched.json", "--steps", "7", "--out", "o",
         fixtures=("sched.json",))
    case("sample-checkpoint-missing", "sample", "--checkpoint", "nope.safetensors", "--width", "1", "--out", "o")
    case("sample-checkpoint-pickle", "sample", "--checkpoint", "model.safetensors", "--width", "1", "--out", "o",
         files=pk)
    case("sample-checkpoint-text", "sample", "--checkpoint", "notes.txt", "--width", "1", "--out", "o",
         files={"notes.txt": "hello\n"})
    case("sample-checkpoint-empty-file", "sample", "--checkpoint", "e.safetensors", "--width", "1", "--out", "o",
         files={"e.safetensors": b""})
    case("sample-checkpoint-empty-dir", "sample", "--checkpoint", "edir", "--width", "1", "--out", "o", dirs=("edir",))
    case("sample-checkpoint-unknown-name", "sample", "--checkpoint", "digitz", "--width", "1", "--out", "o")
    case("sample-checkpoint-search-folder", "sample", "--checkpoint", "srch", "--width", "1", "--out", "o",
         fixtures=("srch",))
    case("sample-device-tpu", "sample", *SM, "--device", "tpu", "--out", "o")
    case("sample-device-cuda", "sample", *SM, "--device", "cuda", "--out", "o")
    case("sample-device-cuda-99", "sample", *SM, "--device", "cuda:99", "--out", "o")
    # a distilled student's sampler flags go through the same validation (they gave a pydantic traceback)
    case("sample-student-eta-nan", "sample", "--checkpoint", "digits-sfddm-k2", "--width", "1", "--num", "2",
         "--eta", "nan", "--no-progress", "--out", "o")
    case("sample-student-guidance-scale-500", "sample", "--checkpoint", "digits-sfddm-k2", "--width", "1", "--num",
         "2", "--guidance-scale", "500", "--no-progress", "--out", "o")
    # class labels and guidance (issue 29): the digits supernet is unconditional
    case("sample-class-label-unconditional", "sample", *SM, "--class-label", "3", "--out", "o")
    for tag, v in [("nan", "nan"), ("inf", "inf"), ("neg", "-1"), ("on-unconditional", "2")]:
        case(f"sample-guidance-scale-{tag}", "sample", *SM, "--guidance-scale", v, "--out", "o")

    # ---------------------------------------------------------------- cost
    CO = ["--checkpoint", "digits", "--repeats", "1", "--warmup", "0", "--batch-size", "1", "--no-progress"]
    out_cases("cost", CO, "cost.json")
    case("cost-out-precious-file", "cost", *CO, "--out", "precious.txt", files=P)
    case("cost-out-dir", "cost", *CO, "--out", "adir", dirs=("adir",))
    case("cost-resolution-4096", "cost", *CO, "--resolution", "4096", "--out", "c.json")
    case("cost-resolution-0", "cost", *CO, "--resolution", "0", "--out", "c.json")
    case("cost-resolution-neg", "cost", *CO, "--resolution", "-16", "--out", "c.json")
    case("cost-resolution-odd", "cost", *CO, "--resolution", "7", "--out", "c.json")
    CO0 = ["--checkpoint", "digits", "--no-progress"]
    case("cost-batch-size-0", "cost", *CO0, "--repeats", "1", "--warmup", "0", "--batch-size", "0", "--out", "c.json")
    case("cost-batch-size-1e9", "cost", *CO0, "--repeats", "1", "--warmup", "0", "--batch-size", "1000000000",
         "--out", "c.json")
    case("cost-repeats-0", "cost", *CO0, "--repeats", "0", "--warmup", "0", "--batch-size", "1", "--out", "c.json")
    case("cost-repeats-neg", "cost", *CO0, "--repeats", "-1", "--warmup", "0", "--batch-size", "1", "--out", "c.json")
    case("cost-warmup-neg", "cost", *CO0, "--repeats", "1", "--warmup", "-1", "--batch-size", "1", "--out", "c.json")
    case("cost-checkpoint-pickle", "cost", "--checkpoint", "model.safetensors", "--out", "c.json", files=pk)
    case("cost-device-tpu", "cost", *CO, "--device", "tpu", "--out", "c.json")
    case("cost-device-cuda", "cost", *CO, "--device", "cuda", "--out", "c.json")

    # ---------------------------------------------------------------- featurenet
    FN = ["--epochs", "1", "--no-progress"]
    out_cases("featurenet", FN, "fn.safetensors")
    case("featurenet-out-precious-file", "featurenet", *FN, "--out", "precious.txt", files=P)
    case("featurenet-channels-2", "featurenet", *FN, "--channels", "2", "--out", "fn.safetensors")
    case("featurenet-channels-0", "featurenet", *FN, "--channels", "0", "--out", "fn.safetensors")
    case("featurenet-channels-4", "featurenet", *FN, "--channels", "4", "--out", "fn.safetensors")
    case("featurenet-size-0", "featurenet", *FN, "--size", "0", "--out", "fn.safetensors")
    case("featurenet-size-100000", "featurenet", *FN, "--size", "100000", "--out", "fn.safetensors")
    case("featurenet-epochs-0", "featurenet", "--epochs", "0", "--no-progress", "--out", "fn.safetensors")
    case("featurenet-epochs-neg", "featurenet", "--epochs", "-1", "--no-progress", "--out", "fn.safetensors")
    case("featurenet-features-0", "featurenet", *FN, "--features", "0", "--out", "fn.safetensors")
    case("featurenet-features-neg", "featurenet", *FN, "--features", "-4", "--out", "fn.safetensors")
    case("featurenet-seed-2p64", "featurenet", *FN, "--seed", SEED64, "--out", "fn.safetensors")
    case("featurenet-seed-neg", "featurenet", *FN, "--seed", "-1", "--out", "fn.safetensors")
    case("featurenet-data-missing-folder", "featurenet", *FN, "--data", "no/such", "--out", "fn.safetensors")
    case("featurenet-data-file", "featurenet", *FN, "--data", "precious.txt", "--out", "fn.safetensors", files=P)
    case("featurenet-data-torchvision-bad", "featurenet", *FN, "--data", "torchvision:NOPE:/nonexistent",
         "--out", "fn.safetensors")
    case("featurenet-checkpoint-pickle", "featurenet", *FN, "--checkpoint", "model.safetensors",
         "--out", "fn.safetensors", files=pk)

    # ---------------------------------------------------------------- evaluate
    EV = ["--checkpoint", "digits", "--width", "0.5", "--steps", "2", "--num", "2", "--no-progress"]
    out_cases("evaluate", EV, "table.csv")
    case("evaluate-out-precious-file", "evaluate", *EV, "--out", "precious.txt", files=P)
    case("evaluate-seed-2p64", "evaluate", *EV, "--seed", SEED64)
    case("evaluate-seed-neg", "evaluate", *EV, "--seed", "-1")
    EV1 = ["--checkpoint", "digits", "--width", "0.5", "--steps", "2", "--no-progress"]
    case("evaluate-num-1e12", "evaluate", *EV1, "--num", "1000000000000")
    case("evaluate-num-0", "evaluate", *EV1, "--num", "0")
    case("evaluate-num-neg", "evaluate", *EV1, "--num", "-5")
    case("evaluate-batch-size-0", "evaluate", *EV, "--batch-size", "0")
    case("evaluate-nothing-to-score", "evaluate", "--checkpoint", "digits")
    case("evaluate-width-unserved", "evaluate", "--checkpoint", "digits", "--width", "0.3", "--num", "2")
    case("evaluate-steps-0", "evaluate", "--checkpoint", "digits", "--width", "0.5", "--steps", "0", "--num", "2")
    case("evaluate-eta-nan", "evaluate", *EV, "--eta", "nan")
    case("evaluate-fid-without-featurenet", "evaluate", *EV, "--metric", "fid")
    case("evaluate-fid-featurenet-pickle", "evaluate", *EV, "--metric", "fid", "--featurenet", "fn.safetensors",
         files={"fn.safetensors": PICKLE})
    case("evaluate-fid-featurenet-missing", "evaluate", *EV, "--metric", "fid", "--featurenet", "nope.safetensors")
    case("evaluate-schedule-not-json", "evaluate", "--checkpoint", "digits", "--schedule", "s.json", "--num", "2",
         files={"s.json": NOT_JSON})
    case("evaluate-schedule-wrong-kind", "evaluate", "--checkpoint", "digits", "--schedule", "srch/front.json",
         "--num", "2", fixtures=("srch",))
    case("evaluate-checkpoint-pickle", "evaluate", "--checkpoint", "model.safetensors", "--width", "1", files=pk)
    case("evaluate-device-tpu", "evaluate", *EV, "--device", "tpu")
    case("evaluate-guidance-scale-unconditional", "evaluate", *EV, "--guidance-scale", "2")
    case("evaluate-guidance-scale-nan", "evaluate", *EV, "--guidance-scale", "nan")

    # ---------------------------------------------------------------- spectrum
    SP = ["--checkpoint", "digits"]
    out_cases("spectrum", SP, "spectrum.json")
    case("spectrum-out-precious-file", "spectrum", *SP, "--out", "precious.txt", files=P)
    for tag, v in [("nan", "nan"), ("0", "0"), ("neg", "-1"), ("inf", "inf")]:
        case(f"spectrum-threshold-{tag}", "spectrum", *SP, "--space", "digits-progressive", "--threshold", v)
    case("spectrum-threshold-nan-no-space", "spectrum", *SP, "--threshold", "nan")
    case("spectrum-space-bomb", "spectrum", *SP, "--space", "bomb.yaml", files={"bomb.yaml": yaml_bomb()})
    case("spectrum-space-empty", "spectrum", *SP, "--space", "empty.yaml", files={"empty.yaml": ""})
    case("spectrum-space-missing", "spectrum", *SP, "--space", "nope.yaml")
    case("spectrum-space-no-resolutions", "spectrum", *SP, "--space", "digits")
    case("spectrum-checkpoint-pickle", "spectrum", "--checkpoint", "model.safetensors", files=pk)
    case("spectrum-plot-without-candidates", "spectrum", *SP, "--plot", "plots")
    case("spectrum-width-unserved", "spectrum", *SP, "--width", "0.3", "--num", "2")
    case("spectrum-num-0", "spectrum", *SP, "--width", "1", "--num", "0")
    case("spectrum-steps-0", "spectrum", *SP, "--width", "1", "--steps", "0", "--num", "2")
    case("spectrum-plot-nonempty-unrelated", "spectrum", *SP, "--width", "1", "--num", "2", "--plot", "mine",
         files={"mine/precious.txt": PRECIOUS})
    case("spectrum-plot-is-file", "spectrum", *SP, "--width", "1", "--num", "2", "--plot", "precious.txt", files=P)
    case("spectrum-schedule-not-json", "spectrum", *SP, "--schedule", "s.json", "--num", "2",
         files={"s.json": NOT_JSON})

    # ---------------------------------------------------------------- verdict
    VD = ["--checkpoint", "digits", "--width", "0.5", "--steps", "2", "--num", "50", "--teacher-num", "50",
          "--draws", "2", "--no-progress"]
    out_cases("verdict", VD, "verdict.csv")
    case("verdict-out-precious-file", "verdict", *VD, "--out", "precious.txt", files=P)
    case("verdict-seed-2p64", "verdict", *VD, "--seed", SEED64)
    case("verdict-seed-neg", "verdict", *VD, "--seed", "-1")
    VD1 = ["--checkpoint", "digits", "--width", "0.5", "--steps", "2", "--no-progress"]
    case("verdict-num-1e12", "verdict", *VD1, "--num", "1000000000000")
    case("verdict-num-0", "verdict", *VD1, "--num", "0")
    case("verdict-num-neg", "verdict", *VD1, "--num", "-5")
    case("verdict-num-below-min", "verdict", *VD1, "--num", "3")
    case("verdict-teacher-num-0", "verdict", *VD1, "--teacher-num", "0")
    case("verdict-teacher-seed-2p64", "verdict", *VD1, "--teacher-seed", SEED64)
    case("verdict-draws-0", "verdict", *VD1, "--draws", "0")
    case("verdict-draws-neg", "verdict", *VD1, "--draws", "-1")
    case("verdict-search-seeds-abc", "verdict", *VD1, "--search-seeds", "a:b")
    case("verdict-search-seeds-reversed", "verdict", *VD1, "--search-seeds", "64:0")
    case("verdict-search-seeds-overlap", "verdict", *VD1, "--search-seeds", "0:20000")
    case("verdict-metric-bogus", "verdict", *VD1, "--metric", "bogus")
    # --draws 10: VD's --draws 2 is refused before the feature net is read
    VD10 = [*VD[:-3], "--draws", "10", "--no-progress"]
    case("verdict-featurenet-pickle", "verdict", *VD10, "--featurenet", "fn.safetensors",
         files={"fn.safetensors": PICKLE})
    case("verdict-featurenet-missing", "verdict", *VD10, "--featurenet", "nope.safetensors")
    case("verdict-nothing-to-judge", "verdict", "--checkpoint", "digits")
    case("verdict-device-tpu", "verdict", *VD, "--device", "tpu")
    case("verdict-guidance-scale-unconditional", "verdict", *VD10, "--guidance-scale", "2")

    # ---------------------------------------------------------------- search
    SE = ["--space", "space.yaml", "--checkpoint", "digits", "--no-progress"]
    out_cases("search", SE, "search", files=S)
    case("search-out-precious-file", "search", *SE, "--out", "precious.txt", files={**S, **P})
    case("search-out-train-run", "search", *SE, "--out", "trun", files=S, fixtures=("trun",),
         note="a folder holding a training run")
    case("search-out-export", "search", *SE, "--out", "exp", files=S, fixtures=("exp",))
    case("search-out-existing-search", "search", *SE, "--out", "srch", files=S, fixtures=("srch",),
         note="a fresh start over a finished search")
    case("search-resume-missing-dir", "search", *SE, "--resume", "--out", "NEW_MISSING_DIR", files=S)
    case("search-resume-no-space", "search", "--checkpoint", "digits", "--resume", "--out", "empty", dirs=("empty",))
    case("search-resume-other-space", "search", "--space", "digits-smoke", "--checkpoint", "digits", "--resume",
         "--out", "srch", "--no-progress", fixtures=("srch",))

    def space_case(id: str, text: str, note: str = "") -> None:
        case(id, "search", "--space", "bad.yaml", "--checkpoint", "digits", "--out", "s", "--no-progress",
             files={"bad.yaml": text}, note=note)

    space_case("search-space-widths-strings", space_with(widths='["0.5", "1.0"]'))
    space_case("search-space-width-twice", space_with(widths="[0.5, 0.5, 1.0]"))
    space_case("search-space-width-unserved", space_with(widths="[0.3, 1.0]"))
    space_case("search-space-empty", "")
    space_case("search-space-bomb", yaml_bomb())
    space_case("search-space-bomb-in-field", yaml_bomb("widths: *i\n"))
    space_case("search-space-list", "- 0.5\n- 1.0\n")
    space_case("search-space-unknown-key", space_with(populaton="4"))
    space_case("search-space-budget-0", space_with(budget="0"))
    space_case("search-space-budget-nan", space_with(budget=".nan"))
    space_case("search-space-budget-2", space_with(budget="2"))
    space_case("search-space-population-0", space_with(population="0"))
    space_case("search-space-generations-1e12", space_with(generations="1000000000000"))
    space_case("search-space-steps-0", space_with(sampler="{kind: ddim, steps: 0}"))
    space_case("search-space-segments-over-steps", space_with(segments="50"))
    space_case("search-space-num-samples-1e12", space_with(evaluator="{num_samples: 1000000000000, seed: 0}"))
    space_case("search-space-malformed", "widths: [0.5, 1.0\nbudget: : :\n")
    # guidance (issue 29): the digits supernet is unconditional; guidance genes need a guided sampler
    space_case("search-space-guided-on-unconditional", space_with(sampler="{kind: ddim, steps: 4, guidance_scale: 2}"))
    space_case("search-space-guidance-genes-unguided", space_with(guidance_genes="true"))
    space_case("search-space-guidance-genes-on-unconditional",
               space_with(sampler="{kind: ddim, steps: 4, guidance_scale: 2}", guidance_genes="true"))
    case("search-space-missing", "search", "--space", "nope.yaml", "--checkpoint", "digits", "--out", "s")
    case("search-space-unknown-shipped", "search", "--space", "digitz-smoke", "--checkpoint", "digits", "--out", "s")
    case("search-no-space", "search", "--checkpoint", "digits", "--out", "s")
    case("search-serial-with-address", "search", *SE, "--runner", "serial", "--address", "127.0.0.1:6379",
         "--out", "s", files=S)
    case("search-workers-0", "search", *SE, "--runner", "ray", "--workers", "0", "--out", "s", files=S)
    case("search-workers-neg", "search", *SE, "--runner", "ray", "--workers", "-1", "--out", "s", files=S)
    case("search-serial-workers-0", "search", *SE, "--workers", "0", "--out", "s", files=S)
    case("search-chunk-size-0", "search", *SE, "--chunk-size", "0", "--out", "s", files=S)
    case("search-chunk-size-neg", "search", *SE, "--chunk-size", "-2", "--out", "s", files=S)
    case("search-gpus-per-worker-neg", "search", *SE, "--runner", "ray", "--gpus-per-worker", "-1", "--out", "s",
         files=S)
    case("search-gpus-per-worker-nan", "search", *SE, "--runner", "ray", "--gpus-per-worker", "nan", "--out", "s",
         files=S)
    case("search-serial-gpus-per-worker", "search", *SE, "--gpus-per-worker", "0.5", "--out", "s", files=S)
    case("search-device-cuda", "search", *SE, "--device", "cuda", "--out", "s", files=S)
    case("search-device-tpu", "search", *SE, "--device", "tpu", "--out", "s", files=S)
    case("search-featurenet-pickle", "search", *SE, "--featurenet", "fn.safetensors", "--out", "s",
         files={**S, "fn.safetensors": PICKLE}, note="space's quality is proxy: a given feature net is still bad input")
    case("search-fid-featurenet-pickle", "search", "--space", "fid.yaml", "--checkpoint", "digits", "--no-progress",
         "--featurenet", "fn.safetensors", "--out", "s",
         files={"fid.yaml": space_with(objectives="{quality: fid, cost: flops}"), "fn.safetensors": PICKLE})
    case("search-fid-featurenet-missing", "search", "--space", "fid.yaml", "--checkpoint", "digits", "--no-progress",
         "--out", "s", files={"fid.yaml": space_with(objectives="{quality: fid, cost: flops}")})
    case("search-cost-not-json", "search", *SE, "--cost", "cost.json", "--out", "s",
         files={**S, "cost.json": NOT_JSON}, note="flops space: the cost file is still read or refused")
    case("search-latency-cost-not-json", "search", "--space", "lat.yaml", "--checkpoint", "digits", "--no-progress",
         "--cost", "cost.json", "--out", "s",
         files={"lat.yaml": space_with(objectives="{quality: proxy, cost: latency}"), "cost.json": NOT_JSON})
    case("search-latency-cost-wrong-kind", "search", "--space", "lat.yaml", "--checkpoint", "digits",
         "--no-progress", "--cost", "sched.json", "--out", "s",
         files={"lat.yaml": space_with(objectives="{quality: proxy, cost: latency}")}, fixtures=("sched.json",))
    case("search-latency-no-cost", "search", "--space", "lat.yaml", "--checkpoint", "digits", "--no-progress",
         "--out", "s", files={"lat.yaml": space_with(objectives="{quality: proxy, cost: latency}")})
    case("search-checkpoint-pickle", "search", *SE, "--checkpoint", "model.safetensors", "--out", "s",
         files={**S, **pk})
    case("search-checkpoint-missing", "search", "--space", "space.yaml", "--checkpoint", "nope", "--out", "s", files=S)
    case("search-checkpoint-text", "search", "--space", "space.yaml", "--checkpoint", "notes.txt", "--out", "s",
         files={**S, "notes.txt": "hello\n"})

    # ---------------------------------------------------------------- export
    EX = ["srch", "--checkpoint", "digits", "--repeats", "1", "--warmup", "0", "--num", "2", "--no-progress"]
    out_cases("export", EX, "export", fixtures=("srch",))
    case("export-out-precious-file", "export", *EX, "--out", "precious.txt", files=P, fixtures=("srch",))
    case("export-out-nonempty-unrelated", "export", *EX, "--out", "mine", files={"mine/precious.txt": PRECIOUS},
         fixtures=("srch",))
    case("export-out-search-folder", "export", *EX, "--out", "srch", fixtures=("srch",),
         note="export into the search folder itself")
    case("export-out-train-run", "export", *EX, "--out", "trun", fixtures=("srch", "trun"))
    for tag, v in [("2", "2"), ("0", "0"), ("neg", "-1"), ("nan", "nan"), ("1e-9", "1e-9")]:
        case(f"export-budget-{tag}", "export", *EX, "--budget", v, "--out", "e", fixtures=("srch",))
    EX1 = ["srch", "--checkpoint", "digits", "--repeats", "1", "--warmup", "0", "--no-progress"]
    case("export-num-1e12", "export", *EX1, "--num", "1000000000000", "--out", "e", fixtures=("srch",))
    case("export-num-0", "export", *EX1, "--num", "0", "--out", "e", fixtures=("srch",))
    case("export-num-neg", "export", *EX1, "--num", "-5", "--out", "e", fixtures=("srch",))
    case("export-seed-2p64", "export", *EX, "--seed", SEED64, "--out", "e", fixtures=("srch",))
    case("export-seed-neg", "export", *EX, "--seed", "-1", "--out", "e", fixtures=("srch",))
    case("export-repeats-0", "export", "srch", "--checkpoint", "digits", "--repeats", "0", "--warmup", "0",
         "--num", "2", "--no-progress", "--out", "e", fixtures=("srch",))
    case("export-warmup-neg", "export", "srch", "--checkpoint", "digits", "--repeats", "1", "--warmup", "-1",
         "--num", "2", "--no-progress", "--out", "e", fixtures=("srch",))
    case("export-verdict-below-min", "export", *EX, "--verdict", "10", "--out", "e", fixtures=("srch",))
    case("export-verdict-neg", "export", *EX, "--verdict", "-1", "--out", "e", fixtures=("srch",))
    case("export-verdict-featurenet-pickle", "export", *EX, "--verdict", "50", "--featurenet", "fn.safetensors",
         "--out", "e", files={"fn.safetensors": PICKLE}, fixtures=("srch",))
    case("export-verdict-seed-overlap", "export", *EX, "--verdict", "50", "--verdict-seed", "0", "--out", "e",
         fixtures=("srch",))
    case("export-search-dir-missing", "export", "nope", "--checkpoint", "digits", "--out", "e")
    case("export-search-dir-file", "export", "precious.txt", "--checkpoint", "digits", "--out", "e", files=P)
    case("export-search-dir-train-run", "export", "trun", "--checkpoint", "digits", "--out", "e", fixtures=("trun",))
    case("export-search-dir-empty", "export", "empty", "--checkpoint", "digits", "--out", "e", dirs=("empty",))
    case("export-search-corrupt-front", "export", *EX, "--out", "e", fixtures=("srch",),
         files={"srch/front.json": NOT_JSON}, note="search folder whose front.json is not JSON")
    case("export-checkpoint-other-supernet", "export", "srch", "--checkpoint", "trun", "--num", "2", "--out", "e",
         fixtures=("srch", "trun"))
    case("export-checkpoint-pickle", "export", "srch", "--checkpoint", "model.safetensors", "--out", "e",
         files=pk, fixtures=("srch",))
    case("export-device-tpu", "export", *EX, "--device", "tpu", "--out", "e", fixtures=("srch",))

    # ---------------------------------------------------------------- plot
    PL = ["srch", "--checkpoint", "digits", "--num", "2"]
    out_cases("plot", PL, "plots", fixtures=("srch",))
    case("plot-out-precious-file", "plot", *PL, "--out", "precious.txt", files=P, fixtures=("srch",))
    case("plot-out-nonempty-unrelated", "plot", *PL, "--out", "mine", files={"mine/precious.txt": PRECIOUS},
         fixtures=("srch",))
    case("plot-out-train-run", "plot", *PL, "--out", "trun", fixtures=("srch", "trun"))
    PL1 = ["srch", "--checkpoint", "digits"]
    case("plot-num-1e9", "plot", *PL1, "--num", "1000000000", "--out", "p", fixtures=("srch",))
    case("plot-num-1e12", "plot", *PL1, "--num", "1000000000000", "--out", "p", fixtures=("srch",))
    case("plot-num-0", "plot", *PL1, "--num", "0", "--out", "p", fixtures=("srch",))
    case("plot-num-neg", "plot", *PL1, "--num", "-5", "--out", "p", fixtures=("srch",))
    case("plot-seed-2p64", "plot", *PL, "--seed", SEED64, "--out", "p", fixtures=("srch",))
    case("plot-seed-neg", "plot", *PL, "--seed", "-1", "--out", "p", fixtures=("srch",))
    case("plot-export-missing", "plot", *PL, "--export", "nope", "--out", "p", fixtures=("srch",))
    case("plot-export-not-export", "plot", *PL, "--export", "trun", "--out", "p", fixtures=("srch", "trun"))
    case("plot-export-without-verdict", "plot", *PL, "--export", "exp", "--out", "p", fixtures=("srch", "exp"),
         edits={"exp/export.json": {"search": f"{SANDBOX}/srch"}},
         note="an export made without --verdict (its manifest pointed at the sandbox's copy of the search)")
    case("plot-evaluate-missing-featurenet-pickle", "plot", *PL, "--evaluate-missing", "--featurenet",
         "fn.safetensors", "--out", "p", files={"fn.safetensors": PICKLE}, fixtures=("srch",))
    case("plot-search-dir-missing", "plot", "nope", "--checkpoint", "digits", "--out", "p")
    case("plot-search-dir-train-run", "plot", "trun", "--checkpoint", "digits", "--out", "p", fixtures=("trun",))
    case("plot-checkpoint-pickle", "plot", "srch", "--checkpoint", "model.safetensors", "--out", "p", files=pk,
         fixtures=("srch",))
    case("plot-device-tpu", "plot", *PL, "--device", "tpu", "--out", "p", fixtures=("srch",))

    # ---------------------------------------------------------------- sweep
    SWP = ["--space", "space.yaml", "--checkpoint", "digits"]
    for tag, v in [("0", "0"), ("neg", "-1"), ("1.5", "1.5"), ("nan", "nan"), ("inf", "inf")]:
        case(f"sweep-budget-{tag}", "sweep", *SWP, "--budget", v, "--out", "sw", files=S)
    B = ["--budget", "0.5"]
    case("sweep-cpus-per-trial-64", "sweep", *SWP, *B, "--cpus-per-trial", "64", "--out", "sw", files=S)
    case("sweep-cpus-per-trial-0", "sweep", *SWP, *B, "--cpus-per-trial", "0", "--out", "sw", files=S)
    case("sweep-cpus-per-trial-neg", "sweep", *SWP, *B, "--cpus-per-trial", "-1", "--out", "sw", files=S)
    case("sweep-cpus-per-trial-nan", "sweep", *SWP, *B, "--cpus-per-trial", "nan", "--out", "sw", files=S)
    case("sweep-seed-neg", "sweep", *SWP, *B, "--seed", "-1", "--out", "sw", files=S)
    case("sweep-seed-2p64", "sweep", *SWP, *B, "--seed", SEED64, "--out", "sw", files=S)
    case("sweep-space-missing", "sweep", "--space", "nope.yaml", "--checkpoint", "digits", *B, "--out", "sw")
    case("sweep-space-bomb", "sweep", "--space", "bomb.yaml", "--checkpoint", "digits", *B, "--out", "sw",
         files={"bomb.yaml": yaml_bomb("widths: *i\n")})
    case("sweep-space-widths-strings", "sweep", "--space", "bad.yaml", "--checkpoint", "digits", *B, "--out", "sw",
         files={"bad.yaml": space_with(widths='["0.5", "1.0"]')})
    case("sweep-checkpoint-pickle", "sweep", *SWP, *B, "--checkpoint", "model.safetensors", "--out", "sw",
         files={**S, **pk})
    case("sweep-out-nonempty-unrelated", "sweep", *SWP, *B, "--out", "mine",
         files={**S, "mine/precious.txt": PRECIOUS})
    case("sweep-out-search-folder", "sweep", *SWP, *B, "--out", "srch", files=S, fixtures=("srch",))
    case("sweep-out-precious-file", "sweep", *SWP, *B, "--out", "precious.txt", files={**S, **P})
    case("sweep-out-proc", "sweep", *SWP, *B, "--out", "/proc/self/sweep", files=S)
    case("sweep-out-below-file", "sweep", *SWP, *B, "--out", "afile/sweep", files={**S, "afile": "x\n"})
    case("sweep-resume-missing-dir", "sweep", *SWP, *B, "--resume", "--out", "NEW_MISSING_DIR", files=S)
    case("sweep-cost-not-json", "sweep", *SWP, *B, "--cost", "cost.json", "--out", "sw",
         files={**S, "cost.json": NOT_JSON})
    case("sweep-featurenet-pickle", "sweep", *SWP, *B, "--featurenet", "fn.safetensors", "--out", "sw",
         files={**S, "fn.safetensors": PICKLE})

    # ---------------------------------------------------------------- quickstart
    QS = ["--runner", "serial", "--no-progress"]
    case("quickstart-space-bomb", "quickstart", *QS, "--space", "bomb.yaml", "--out", "q",
         files={"bomb.yaml": yaml_bomb("widths: *i\n")})
    case("quickstart-space-widths-strings", "quickstart", *QS, "--space", "bad.yaml", "--out", "q",
         files={"bad.yaml": space_with(widths='["0.5", "1.0"]')})
    case("quickstart-space-missing", "quickstart", *QS, "--space", "nope.yaml", "--out", "q")
    case("quickstart-space-empty", "quickstart", *QS, "--space", "empty.yaml", "--out", "q", files={"empty.yaml": ""})
    case("quickstart-ray-space-missing", "quickstart", "--no-progress", "--space", "nope.yaml", "--out", "q",
         note="default runner (ray)")
    case("quickstart-num-10", "quickstart", *QS, "--num", "10", "--out", "q")
    case("quickstart-workers-0", "quickstart", "--workers", "0", "--no-progress", "--out", "q")
    case("quickstart-device-tpu", "quickstart", *QS, "--device", "tpu", "--out", "q")
    case("quickstart-checkpoint-pickle", "quickstart", *QS, "--checkpoint", "model.safetensors", "--out", "q",
         files=pk)
    case("quickstart-out-proc", "quickstart", *QS, "--out", "/proc/self/quickstart")
    case("quickstart-out-below-file", "quickstart", *QS, "--out", "afile/q", files={"afile": "x\n"})
    case("quickstart-out-precious-file", "quickstart", *QS, "--out", "precious.txt", files=P)
    case("quickstart-out-nonempty-unrelated", "quickstart", *QS, "--out", "mine",
         files={"mine/precious.txt": PRECIOUS})
    case("quickstart-out-search-folder", "quickstart", *QS, "--out", "srch", fixtures=("srch",))

    # ---------------------------------------------------------------- distill
    # The tiny training run (T = 50, 8x8) is the teacher wherever the teacher is not the point: an input wrongly
    # accepted then distils one step in a second, not the digits teacher's ~20 s.
    D = ["--teacher", "trun", "--steps", "2", "--iters", "1", "--no-progress"]
    TR = ("trun",)
    out_cases("distill", D, "run", fixtures=TR)
    case("distill-out-precious-file", "distill", *D, "--out", "precious.txt", files=P, fixtures=TR)
    case("distill-out-finished-run", "distill", *D, "--out", "drun", fixtures=("trun", "drun"),
         note="a fresh start over a finished distillation would overwrite it")
    case("distill-out-teacher-run", "distill", *D, "--out", "trun", fixtures=TR,
         note="the teacher's own run folder: a training run, not a distillation")
    case("distill-out-nonempty-unrelated", "distill", *D, "--out", "mine", files={"mine/precious.txt": PRECIOUS},
         fixtures=TR)
    in_package = package_dir() / "assets" / "fuzz-distill-run"
    case("distill-out-in-package", "distill", *D, "--out", str(in_package), fixtures=TR, outside=(in_package,),
         note="a run folder inside ddsm's installed package (ddsm/assets): outside the sandbox, checked by path")
    # the config file: every float of train, distill and data with NaN, infinity or a negative value
    for tag, text in [("lr-inf", "train: {lr: .inf}"), ("lr-nan", "train: {lr: .nan}"),
                      ("lr-neg", "train: {lr: -0.001}"),
                      ("weight-decay-inf", "train: {weight_decay: .inf}"),
                      ("weight-decay-nan", "train: {weight_decay: .nan}"),
                      ("weight-decay-neg", "train: {weight_decay: -0.1}"),
                      ("grad-clip-nan", "train: {grad_clip: .nan}"), ("grad-clip-inf", "train: {grad_clip: .inf}"),
                      ("grad-clip-neg", "train: {grad_clip: -1.0}"),
                      ("min-lr-ratio-nan", "train: {min_lr_ratio: .nan}"),
                      ("min-lr-ratio-neg", "train: {min_lr_ratio: -0.5}"),
                      ("ema-decay-nan", "train: {ema_decay: .nan}"), ("ema-decay-neg-inf", "train: {ema_decay: -.inf}"),
                      ("hidden-weight-nan", "distill: {hidden_weight: .nan}"),
                      ("hidden-weight-inf", "distill: {hidden_weight: .inf}"),
                      ("hidden-weight-neg", "distill: {hidden_weight: -1.0}"),
                      ("holdout-fraction-nan", "data: {holdout_fraction: .nan}"),
                      ("holdout-fraction-neg", "data: {holdout_fraction: -0.2}"),
                      ("holdout-fraction-1", "data: {holdout_fraction: 1.0}"),
                      ("batch-size-0", "train: {batch_size: 0}"), ("warmup-neg", "train: {warmup: -5}"),
                      ("sub-steps-1e6", "distill: {sub_steps: 1000000}"),
                      ("spacing-unknown", "distill: {spacing: cosine}"),
                      ("spectral-weight", "train: {spectral_weight: 0.5}"),  # a train-only setting
                      ("teacher-other", "distill: {teacher: digits}"),  # disagrees with --teacher
                      ("model-section", "model: {unet: {base_channels: 8}}"),  # the student's model is the teacher's
                      ("unknown-key", "distill: {sub_step: 2}"),
                      ("data-missing-folder", "data: {source: no/such/folder}"),
                      ("malformed", "train: {lr: [1, 2\n  : :"), ("list", "- 1\n- 2"),
                      ("bomb", yaml_bomb()), ("bomb-in-field", yaml_bomb("train: {lr: *i}"))]:
        case(f"distill-config-{tag}", "distill", *D, "--config", "d.yaml", "--out", "run",
             files={"d.yaml": text + "\n"}, fixtures=TR)
    case("distill-config-missing", "distill", *D, "--config", "nope.yaml", "--out", "run", fixtures=TR)
    # the student's steps and the target's sub-steps (the tiny teacher has T = 50, digits T = 1000)
    DT = ["--teacher", "trun", "--iters", "1", "--no-progress", "--out", "run"]
    for tag, v in [("0", "0"), ("neg", "-1"), ("over-T", "51")]:
        case(f"distill-steps-{tag}", "distill", *DT, "--steps", v, fixtures=TR)
    case("distill-steps-missing", "distill", *DT, fixtures=TR)
    case("distill-steps-over-digits-T", "distill", "--teacher", "digits", "--steps", "1001", "--iters", "1",
         "--no-progress", "--out", "run")
    case("distill-teacher-shipped-student", "distill", "--teacher", "digits-sfddm-k2", "--steps", "50", "--iters", "1",
         "--no-progress", "--out", "run",
         note="--steps 50 fits digits' T = 1000, but the shipped student is no teacher")
    for tag, v in [("0", "0"), ("neg", "-2"), ("1001", "1001")]:
        case(f"distill-sub-steps-{tag}", "distill", *D, "--sub-steps", v, "--out", "run", fixtures=TR)
    # guided distillation: a class-conditional teacher, a v student and a scale in [0, 100] other than 1
    case("distill-guidance-unconditional-teacher", "distill", *D, "--guidance-scale", "2", "--out", "run", fixtures=TR)
    DG = ["--teacher", "mnist-unet", "--steps", "2", "--iters", "1", "--no-progress", "--out", "run"]
    for tag, v in [("nan", "nan"), ("inf", "inf"), ("neg", "-1"), ("1", "1"), ("101", "101")]:
        case(f"distill-guidance-{tag}", "distill", *DG, "--guidance-scale", v)
    case("distill-guidance-eps-student", "distill", *DG, "--guidance-scale", "2", "--prediction", "epsilon")
    case("distill-resume-guidance", "distill", "--out", "drun", "--resume", "--guidance-scale", "2", "--no-progress",
         fixtures=("trun", "drun"), note="a resumed run keeps its recipe")
    DI = ["--teacher", "trun", "--steps", "2", "--no-progress", "--out", "run"]
    case("distill-iters-0", "distill", *DI, "--iters", "0", fixtures=TR)
    case("distill-iters-neg", "distill", *DI, "--iters", "-1", fixtures=TR)
    case("distill-seed-neg", "distill", *D, "--seed", "-1", "--out", "run", fixtures=TR)
    case("distill-seed-2p64", "distill", *D, "--seed", SEED64, "--out", "run", fixtures=TR)
    case("distill-device-tpu", "distill", *D, "--device", "tpu", "--out", "run", fixtures=TR)
    case("distill-device-cuda-99", "distill", *D, "--device", "cuda:99", "--out", "run", fixtures=TR)
    # the teacher
    DS = ["--steps", "2", "--iters", "1", "--no-progress", "--out", "run"]
    case("distill-teacher-missing", "distill", "--teacher", "nope.safetensors", *DS)
    case("distill-teacher-pickle", "distill", "--teacher", "model.safetensors", *DS, files=pk)
    case("distill-teacher-text", "distill", "--teacher", "notes.txt", *DS, files={"notes.txt": "hello\n"})
    case("distill-teacher-empty-dir", "distill", "--teacher", "edir", *DS, dirs=("edir",))
    case("distill-teacher-unknown-name", "distill", "--teacher", "digitz", *DS)
    case("distill-teacher-search-folder", "distill", "--teacher", "srch", *DS, fixtures=("srch",))
    case("distill-teacher-slim-run", "distill", "--teacher", "srun", *DS, fixtures=("srun",))
    case("distill-teacher-student-run", "distill", "--teacher", "drun", *DS, fixtures=("drun",),
         note="a distilled student as the teacher")
    case("distill-teacher-featurenet", "distill", "--teacher",
         str(package_dir() / "assets" / "featurenet-digits.safetensors"), *DS,
         note="a safetensors file of another kind (the shipped feature net)")
    # --resume
    case("distill-resume-missing-dir", "distill", "--resume", "--out", "NEW_MISSING_DIR", "--no-progress")
    case("distill-resume-empty-dir", "distill", "--resume", "--out", "empty", "--no-progress", dirs=("empty",))
    case("distill-resume-train-run", "distill", "--resume", "--out", "trun", "--no-progress", fixtures=TR)
    case("distill-resume-search-folder", "distill", "--resume", "--out", "srch", "--no-progress", fixtures=("srch",))
    case("distill-resume-slim-run", "distill", "--resume", "--out", "srun", "--no-progress", fixtures=("srun", "diff"))
    case("distill-resume-steps-clash", "distill", "--resume", "--out", "drun", "--steps", "4", "--no-progress",
         fixtures=("drun", "trun"))
    case("distill-resume-other-teacher", "distill", "--resume", "--out", "drun", "--teacher", "digits",
         "--no-progress", fixtures=("drun", "trun"))

    # ---------------------------------------------------------------- slim (--from-diffusers)
    # The tiny diffusers folder serves widths 0.5 and 1 (0.25 splits its GroupNorm groups); one value changed per case.
    SL = ["--from-diffusers", "diff", "--width", "0.5", "--iters", "1", "--no-progress"]
    DF = ("diff",)

    def slim_edit(tag: str, file: str, changes: dict, note: str = "") -> None:
        case(f"slim-{tag}", "slim", *SL, "--out", "run", fixtures=DF, edits={f"diff/{file}": changes}, note=note)

    sch, cfg = "scheduler_config.json", "config.json"
    for key in ("beta_start", "beta_end"):
        k = key.replace("_", "-")
        for tag, v in [("nan", math.nan), ("inf", math.inf), ("neg", -0.001), ("above-1", 1.5)]:
            slim_edit(f"scheduler-{k}-{tag}", sch, {key: v})
    slim_edit("scheduler-beta-start-above-end", sch, {"beta_start": 0.05, "beta_end": 0.02},
              note="betas that shrink as noise grows")
    for tag, v in [("0", 0), ("1", 1), ("neg", -5), ("1e12", 10**12)]:
        slim_edit(f"scheduler-timesteps-{tag}", sch, {"num_train_timesteps": v})
    slim_edit("scheduler-timesteps-float", sch, {"num_train_timesteps": 50.5})
    slim_edit("scheduler-beta-schedule-unknown", sch, {"beta_schedule": "bogus"})
    slim_edit("scheduler-prediction-flow", sch, {"prediction_type": "flow_prediction"})
    case("slim-scheduler-missing", "slim", *SL, "--out", "run", fixtures=DF, files={f"diff/{sch}": None})
    case("slim-scheduler-not-json", "slim", *SL, "--out", "run", fixtures=DF, files={f"diff/{sch}": NOT_JSON})
    for tag, v in [("neg", -8), ("0", 0), ("1e9", 10**9), ("4096", 4096), ("list", [8, 8])]:
        slim_edit(f"config-sample-size-{tag}", cfg, {"sample_size": v})
    slim_edit("config-in-channels-0", cfg, {"in_channels": 0})
    slim_edit("config-block-out-channels-empty", cfg, {"block_out_channels": []})
    slim_edit("config-block-out-channels-string", cfg, {"block_out_channels": "8,16"})
    slim_edit("config-class-other", cfg, {"_class_name": "UNet2DConditionModel"})
    case("slim-config-nested-100000", "slim", *SL, "--out", "run", fixtures=DF,
         files={f"diff/{cfg}": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"})
    slim_edit("config-60mb", cfg, {"_padding": lambda: "x" * (60 << 20)},
              note="a valid config but for a 60 MB private key (config files are bounded at 1 MiB elsewhere)")
    case("slim-config-not-json", "slim", *SL, "--out", "run", fixtures=DF, files={f"diff/{cfg}": NOT_JSON})
    case("slim-config-list", "slim", *SL, "--out", "run", fixtures=DF, files={f"diff/{cfg}": "[1, 2, 3]"})
    case("slim-weights-missing", "slim", *SL, "--out", "run", fixtures=DF,
         files={"diff/diffusion_pytorch_model.safetensors": None})
    case("slim-weights-pickle", "slim", *SL, "--out", "run", fixtures=DF,
         files={"diff/diffusion_pytorch_model.safetensors": PICKLE})
    # the source folder itself
    SX = ["--width", "0.5", "--iters", "1", "--no-progress", "--out", "run"]
    case("slim-hub-id", "slim", "--from-diffusers", "google/ddpm-cifar10-32", *SX)
    case("slim-source-missing-folder", "slim", "--from-diffusers", "no/such/folder", *SX)
    case("slim-source-search-folder", "slim", "--from-diffusers", "srch", *SX, fixtures=("srch",))
    case("slim-source-train-run", "slim", "--from-diffusers", "trun", *SX, fixtures=TR)
    case("slim-source-none", "slim", *SX)
    # flags
    SW0 = ["--from-diffusers", "diff", "--iters", "1", "--no-progress", "--out", "run"]
    for tag, v in [("1.5", "1.5"), ("nan", "nan"), ("0", "0"), ("neg", "-0.5"), ("inf", "inf"), ("0.25", "0.25")]:
        case(f"slim-width-{tag}", "slim", *SW0, "--width", v, fixtures=DF)
    for tag, v in [("nan", "nan"), ("inf", "inf")]:
        case(f"slim-hidden-weight-{tag}", "slim", *SL, "--hidden-weight", v, "--out", "run", fixtures=DF)
    SI = ["--from-diffusers", "diff", "--width", "0.5", "--no-progress", "--out", "run"]
    case("slim-iters-0", "slim", *SI, "--iters", "0", fixtures=DF)
    case("slim-iters-neg", "slim", *SI, "--iters", "-3", fixtures=DF)
    case("slim-order-bogus", "slim", *SL, "--order", "bogus", "--out", "run", fixtures=DF)
    case("slim-seed-2p64", "slim", *SL, "--seed", SEED64, "--out", "run", fixtures=DF)
    case("slim-device-tpu", "slim", *SL, "--device", "tpu", "--out", "run", fixtures=DF)
    case("slim-data-wrong-size", "slim", *SL, "--data", "big", "--out", "run", fixtures=DF,
         files={f"big/{i}.png": GREY_PNG_16 for i in range(4)}, note="16x16 images for an 8x8 model")
    case("slim-data-missing-folder", "slim", *SL, "--data", "no/such/folder", "--out", "run", fixtures=DF)
    case("slim-data-empty-folder", "slim", *SL, "--data", "imgs", "--out", "run", fixtures=DF, dirs=("imgs",))
    for tag, text in [("model-section", "model: {unet: {base_channels: 8}}"),
                      ("hidden-weight-nan", "slim: {hidden_weight: .nan}"), ("lr-inf", "train: {lr: .inf}"),
                      ("distill-weight-1.5", "train: {distill_weight: 1.5}"),
                      ("criterion-unknown", "slim: {criterion: activation}"),
                      ("source-other", "slim: {source: other-folder}")]:
        case(f"slim-config-file-{tag}", "slim", *SL, "--config", "s.yaml", "--out", "run", fixtures=DF,
             files={"s.yaml": text + "\n"})
    out_cases("slim", SL, "run", fixtures=DF)
    case("slim-out-source-folder", "slim", *SL, "--out", "diff", fixtures=DF, note="over the model folder itself")
    case("slim-out-finished-run", "slim", *SL, "--out", "srun", fixtures=("diff", "srun"))
    case("slim-out-precious-file", "slim", *SL, "--out", "precious.txt", files=P, fixtures=DF)
    slim_pkg = package_dir() / "assets" / "fuzz-slim-run"
    case("slim-out-in-package", "slim", *SL, "--out", str(slim_pkg), fixtures=DF, outside=(slim_pkg,))
    case("slim-resume-train-run", "slim", "--resume", "--out", "trun", "--no-progress", fixtures=TR)
    case("slim-resume-distill-run", "slim", "--resume", "--out", "drun", "--no-progress", fixtures=("drun", "trun"))
    case("slim-resume-missing-dir", "slim", "--resume", "--out", "NEW_MISSING_DIR", "--no-progress")
    case("slim-resume-empty-dir", "slim", "--resume", "--out", "empty", "--no-progress", dirs=("empty",))
    case("slim-resume-width-clash", "slim", "--resume", "--out", "srun", "--width", "0.75", "--no-progress",
         fixtures=("diff", "srun"))

    # ---------------------------------------------------------------- search-steps
    # The tiny training run as the teacher and its tiny distillation as the student: every model of a joint space is
    # loaded and its MACs counted before the runner flags are read (~2 s per model of digits' size, a case).
    def joint_text(teacher: str = "trun", students: str = "[drun]", base: str = "space.yaml", extra: str = "") -> str:
        return f"base: {base}\nteacher: {teacher}\nstudents: {students}\n{extra}"

    J = {**S, "joint.yaml": joint_text()}
    SS = ["--space", "joint.yaml", "--no-progress"]
    TD = ("trun", "drun")
    case("search-steps-workers-0", "search-steps", *SS, "--workers", "0", "--out", "j", files=J, fixtures=TD)
    case("search-steps-chunk-size-0", "search-steps", *SS, "--chunk-size", "0", "--out", "j", files=J, fixtures=TD)
    case("search-steps-chunk-size-neg", "search-steps", *SS, "--chunk-size", "-4", "--out", "j", files=J,
         fixtures=TD)
    case("search-steps-ray-workers-neg", "search-steps", *SS, "--runner", "ray", "--workers", "-1", "--out", "j",
         files=J, fixtures=TD)
    case("search-steps-ray-workers-1000", "search-steps", *SS, "--runner", "ray", "--workers", "1000", "--out", "j",
         files=J, fixtures=TD, note="more Ray actors than the machine's cores: refused up front, not a hang")
    case("search-steps-device-tpu", "search-steps", *SS, "--device", "tpu", "--out", "j", files=J, fixtures=TD)
    case("search-steps-device-cuda-99", "search-steps", *SS, "--device", "cuda:99", "--out", "j", files=J,
         fixtures=TD)

    def joint_case(tag: str, text: str, files: dict | None = None, note: str = "") -> None:
        case(f"search-steps-space-{tag}", "search-steps", "--space", "bad.yaml", "--out", "j", "--no-progress",
             files={**S, "bad.yaml": text, **(files or {})}, fixtures=TD, note=note)

    joint_case("teacher-missing", joint_text(teacher="nope.safetensors"))
    joint_case("teacher-pickle", joint_text(teacher="model.safetensors"), files=pk)
    joint_case("teacher-is-student", joint_text(teacher="digits-sfddm-k4", students="[digits-sfddm-k2]"),
               note="a shipped student as the teacher")
    joint_case("student-not-student", joint_text(students="[digits]"), note="the shipped teacher is no student")
    joint_case("student-twice", joint_text(students="[drun, drun]"))
    joint_case("teacher-as-student", joint_text(students="[drun, trun]"))
    joint_case("student-other-teacher", joint_text(students="[digits-sfddm-k2]"),
               note="the shipped student, distilled from digits, not from the tiny teacher")
    joint_case("student-missing", joint_text(students="[nope.safetensors]"))
    joint_case("students-empty", joint_text(students="[]"))
    joint_case("no-students", "base: space.yaml\nteacher: digits\n")
    joint_case("unknown-key", joint_text(extra="include_teachr: false\n"))
    joint_case("include-teacher-string", joint_text(extra="include_teacher: maybe\n"))
    joint_case("bomb", yaml_bomb())
    joint_case("bomb-in-field", yaml_bomb("base: space.yaml\nteacher: digits\nstudents: *i\n"))
    joint_case("empty", "")
    joint_case("list", "- digits\n- digits-sfddm-k2\n")
    joint_case("base-missing", joint_text(base="nope.yaml"))
    joint_case("base-budget-nan", joint_text(base="b.yaml"), files={"b.yaml": space_with(budget=".nan")})
    joint_case("base-fid", joint_text(base="b.yaml"),
               files={"b.yaml": space_with(objectives="{quality: fid, cost: flops}")})
    joint_case("base-resolutions", joint_text(base="b.yaml"), files={"b.yaml": space_with(resolutions="[8, 16]")})
    joint_case("base-is-joint", joint_text(base="joint.yaml"), files={"joint.yaml": TINY_JOINT})
    case("search-steps-space-width-space", "search-steps", "--space", "space.yaml", "--out", "j", "--no-progress",
         files=S, note="a width search space given as a joint space")
    case("search-steps-space-missing", "search-steps", "--space", "nope.yaml", "--out", "j", "--no-progress")
    case("search-steps-resume-missing-dir", "search-steps", "--resume", "--out", "NEW_MISSING_DIR", "--no-progress")
    case("search-steps-resume-empty-dir", "search-steps", "--resume", "--out", "empty", "--no-progress",
         dirs=("empty",))
    case("search-steps-resume-single-search", "search-steps", "--resume", "--out", "srch", "--no-progress",
         fixtures=("srch",))
    case("search-steps-resume-train-run", "search-steps", *SS, "--resume", "--out", "trun", files=J, fixtures=TD,
         note="the teacher's own run folder")
    case("search-steps-resume-other-space", "search-steps", *SS, "--resume", "--out", "joint", files=J,
         fixtures=("joint", "trun", "drun"), note="the finished digits joint search resumed with the tiny joint space")
    out_cases("search-steps", SS, "j", files=J, fixtures=TD)
    case("search-steps-out-single-search", "search-steps", *SS, "--out", "srch", files=J, fixtures=("srch", *TD))
    case("search-steps-out-train-run", "search-steps", *SS, "--out", "trun", files=J, fixtures=TD,
         note="the teacher's own run folder")
    case("search-steps-out-finished-joint", "search-steps", "--space", "joint.yaml", "--out", "joint", "--no-progress",
         files={**S, "joint.yaml": TINY_JOINT}, fixtures=("joint",),
         note="a fresh start (no --resume) over a finished joint search, with its own space")
    case("search-steps-out-nonempty-unrelated", "search-steps", *SS, "--out", "mine",
         files={**J, "mine/precious.txt": PRECIOUS}, fixtures=TD)
    case("search-steps-out-precious-file", "search-steps", *SS, "--out", "precious.txt", files={**J, **P}, fixtures=TD)

    # ---------------------------------------------------------------- export-steps
    # The joint fixture's front.json, hand-edited. Its first member is the 2-step student at widths (0.25, 0.25):
    # the cheapest schedule of all (2 narrow steps against the teacher's 4), so always on the front and first.
    E = ["joint", "--no-progress"]
    JF = ("joint",)

    def front_edit(tag: str, changes: dict, note: str = "") -> None:
        case(f"export-steps-front-{tag}", "export-steps", *E, "--out", "e", fixtures=JF,
             edits={"joint/front.json": changes}, note=note)

    front_edit("proxy-nan", {"members.0.proxy": math.nan})
    front_edit("share-1e309", {"members.0.share": Raw("1e309")})
    front_edit("share-neg", {"members.0.share": -0.5})
    front_edit("cost-nan", {"members.0.cost": math.nan})
    front_edit("widths-count", {"members.0.widths": [0.5, 0.5, 0.5]}, note="three widths for the 2-step student")
    front_edit("width-above-1", {"members.0.widths": [1.5, 0.25]})
    front_edit("width-0", {"members.0.widths": [0.0, 0.25]})
    front_edit("width-unserved", {"members.0.widths": [0.3, 0.25]}, note="in (0, 1] but not one of the space's widths")
    front_edit("checkpoint-etc-passwd", {"members.0.checkpoint": "/etc/passwd"})
    front_edit("model-ghost", {"members.0.model": "ghost"})
    front_edit("steps-0", {"members.0.steps": 0})
    front_edit("steps-3", {"members.0.steps": 3, "members.0.widths": [0.25, 0.25, 0.25]},
               note="steps and widths agree with each other, not with the student")
    front_edit("fingerprint-other", {"members.0.fingerprint": "0123456789abcdef"})
    front_edit("genome-strings", {"members.0.genome": ["a", "b"]})
    front_edit("members-empty", {"members": []})
    front_edit("members-dict", {"members": {"k2": 1}})
    front_edit("member-number", {"members.0": 7})
    front_edit("kind-single-search", {"kind": "ddsm.front"})
    case("export-steps-front-and-arm-etc-passwd", "export-steps", *E, "--out", "e", fixtures=JF,
         edits={"joint/front.json": {"members.0.checkpoint": "/etc/passwd"},
                "joint/joint.json": {"arms.k2.checkpoint": "/etc/passwd"}},
         note="the member and joint.json's arm agree on a checkpoint that is no supernet")
    case("export-steps-front-not-json", "export-steps", *E, "--out", "e", fixtures=JF,
         files={"joint/front.json": NOT_JSON})
    case("export-steps-front-list", "export-steps", *E, "--out", "e", fixtures=JF, files={"joint/front.json": "[1, 2]"})
    case("export-steps-front-missing", "export-steps", *E, "--out", "e", fixtures=JF, files={"joint/front.json": None})
    case("export-steps-manifest-missing", "export-steps", *E, "--out", "e", fixtures=JF,
         files={"joint/joint.json": None})
    case("export-steps-manifest-not-json", "export-steps", *E, "--out", "e", fixtures=JF,
         files={"joint/joint.json": NOT_JSON})
    case("export-steps-manifest-kind-other", "export-steps", *E, "--out", "e", fixtures=JF,
         edits={"joint/joint.json": {"kind": "ddsm.search"}})
    case("export-steps-manifest-no-arms", "export-steps", *E, "--out", "e", fixtures=JF,
         edits={"joint/joint.json": {"arms": DROP}})
    case("export-steps-verdict-neg", "export-steps", *E, "--verdict", "-1", "--out", "e", fixtures=JF)
    case("export-steps-verdict-below-min", "export-steps", *E, "--verdict", "10", "--out", "e", fixtures=JF)
    case("export-steps-verdict-seed-neg", "export-steps", *E, "--verdict", "50", "--verdict-seed", "-1", "--out", "e",
         fixtures=JF)
    case("export-steps-verdict-seed-2p64", "export-steps", *E, "--verdict", "50", "--verdict-seed", SEED64,
         "--out", "e", fixtures=JF)
    case("export-steps-verdict-seed-overlap", "export-steps", *E, "--verdict", "50", "--verdict-seed", "0",
         "--out", "e", fixtures=JF, note="verdict seeds 0..49 include the search's seeds 0..1")
    case("export-steps-featurenet-pickle", "export-steps", *E, "--verdict", "50", "--featurenet", "fn.safetensors",
         "--out", "e", files={"fn.safetensors": PICKLE}, fixtures=JF)
    case("export-steps-featurenet-missing", "export-steps", *E, "--verdict", "50", "--featurenet", "nope.safetensors",
         "--out", "e", fixtures=JF)
    out_cases("export-steps", E, "e", fixtures=JF)
    case("export-steps-out-joint-itself", "export-steps", *E, "--out", "joint", fixtures=JF)
    case("export-steps-out-nonempty-unrelated", "export-steps", *E, "--out", "mine",
         files={"mine/precious.txt": PRECIOUS}, fixtures=JF)
    case("export-steps-out-precious-file", "export-steps", *E, "--out", "precious.txt", files=P, fixtures=JF)
    case("export-steps-out-search-folder", "export-steps", *E, "--out", "srch", fixtures=("joint", "srch"))
    case("export-steps-out-other-export", "export-steps", *E, "--out", "exp", fixtures=("joint", "exp"),
         note="the export of a single search")
    EO = ["--no-progress", "--out", "e"]
    case("export-steps-dir-single-search", "export-steps", "srch", *EO, fixtures=("srch",))
    case("export-steps-dir-train-run", "export-steps", "trun", *EO, fixtures=TR)
    case("export-steps-dir-missing", "export-steps", "nope", *EO)
    case("export-steps-dir-file", "export-steps", "precious.txt", *EO, files=P)
    case("export-steps-dir-empty", "export-steps", "empty", *EO, dirs=("empty",))

    # ---------------------------------------------------------------- verdict: schedule files, widths and steps
    # --draws 10 (the least allowed): the cases above use 2, which is refused before anything else is read
    V = ["--checkpoint", "digits", "--num", "50", "--teacher-num", "50", "--draws", "10", "--no-progress"]
    SC = ("sched.json",)

    def sched_edit(tag: str, changes: dict, note: str = "") -> None:
        case(f"verdict-schedule-{tag}", "verdict", *V, "--schedule", "sched.json", fixtures=SC,
             edits={"sched.json": changes}, note=note)

    # the fixture's schedule: DDIM, 4 steps, a width per step from 0.25 0.5 0.75 1
    sched_edit("width-nan", {"widths": [math.nan, 0.5, 0.5, 0.5]})
    sched_edit("width-unserved", {"widths": [0.3, 0.5, 0.5, 0.5]})
    sched_edit("widths-count", {"widths": [0.5, 0.5]})
    sched_edit("other-supernet", {"supernet": "0123456789abcdef"})
    sched_edit("other-weights", {"weights": "0" * 64}, note="the same architecture, measured on other weights")
    sched_edit("kind-other", {"kind": "ddsm.front"})
    sched_edit("steps-0", {"sampler.steps": 0})
    sched_edit("eta-nan", {"sampler.eta": math.nan})
    sched_edit("timesteps-edited", {"timesteps": [1.0, 2.0, 3.0, 4.0]})
    sched_edit("schema-version-2", {"schema_version": 2})
    # guidance choices (issue 29) on the unconditional digits supernet, and on an unguided sampler
    sched_edit("guided-on-unconditional", {"sampler.guidance_scale": 2.0})
    sched_edit("uncond-widths-on-unconditional", {"uncond_widths": [None, 0.5, 0.5, 0.5]})
    sched_edit("uncond-widths-unserved", {"uncond_widths": [0.3, 0.5, 0.5, 0.5]})
    case("verdict-schedule-student-on-teacher", "verdict", *V, "--schedule", "ksched.json", fixtures=("ksched.json",),
         note="the 2-step student's schedule judged on the teacher")
    case("verdict-schedule-teacher-on-student", "verdict", "--checkpoint", "digits-sfddm-k2", *V[2:], "--schedule",
         "sched.json", fixtures=SC)
    case("verdict-schedule-sampler-clash", "verdict", *V, "--schedule", "sched.json", "--sampler", "ddpm",
         fixtures=SC)
    case("verdict-schedule-missing", "verdict", *V, "--schedule", "nope.json")
    case("verdict-width-unserved", "verdict", *V, "--width", "0.3", "--steps", "2")
    case("verdict-width-nan", "verdict", *V, "--width", "nan", "--steps", "2")
    case("verdict-width-0", "verdict", *V, "--width", "0", "--steps", "2")
    case("verdict-steps-0", "verdict", *V, "--width", "0.5", "--steps", "0")
    case("verdict-steps-over-T", "verdict", *V, "--width", "0.5", "--steps", "1001")
    case("verdict-student-other-steps", "verdict", "--checkpoint", "digits-sfddm-k2", *V[2:], "--width", "0.5",
         "--steps", "4", note="a 2-step student asked for 4 steps")
    case("verdict-featurenet-text", "verdict", *V, "--width", "0.5", "--steps", "2", "--featurenet", "notes.txt",
         files={"notes.txt": "hello\n"})

    # ---------------------------------------------------------------- spectrum: the checkpoint's data, flags, space
    # spectrum fits the checkpoint's own training data (its run folder's config.json): a run whose data is gone
    for tag, source, dirs in [("missing-folder", "no/such/folder", ()), ("empty-folder", "imgs", ("imgs",)),
                              ("torchvision-missing", "torchvision:MNIST:/nonexistent", ())]:
        case(f"spectrum-data-{tag}", "spectrum", "--checkpoint", "trun", fixtures=TR, dirs=dirs,
             edits={"trun/config.json": {"data.source": source}})
    SPW = ["--checkpoint", "digits", "--width", "1", "--steps", "2", "--no-progress"]
    case("spectrum-num-neg", "spectrum", *SPW, "--num", "-5")
    case("spectrum-num-1e12", "spectrum", *SPW, "--num", "1000000000000")
    case("spectrum-seed-2p64", "spectrum", *SPW, "--num", "2", "--seed", SEED64)
    case("spectrum-batch-size-0", "spectrum", *SPW, "--num", "2", "--batch-size", "0")
    case("spectrum-steps-over-T", "spectrum", "--checkpoint", "digits", "--width", "1", "--steps", "1001", "--num", "2")
    case("spectrum-width-nan", "spectrum", "--checkpoint", "digits", "--width", "nan", "--steps", "2", "--num", "2")
    case("spectrum-schedule-json-list", "spectrum", *SP, "--schedule", "s.json", "--num", "2",
         files={"s.json": "[1, 2, 3]"})
    case("spectrum-schedule-student", "spectrum", *SP, "--schedule", "ksched.json", "--num", "2",
         fixtures=("ksched.json",), note="the 2-step student's schedule sampled on the teacher")
    case("spectrum-space-resolution-3", "spectrum", *SP, "--space", "r.yaml",
         files={"r.yaml": space_with(resolutions="[3, 16]")})
    case("spectrum-space-resolutions-down", "spectrum", *SP, "--space", "r.yaml",
         files={"r.yaml": space_with(resolutions="[16, 8]")})
    case("spectrum-space-joint", "spectrum", *SP, "--space", "digits-steps", note="a joint space, not a width space")
    case("spectrum-threshold-1e309", "spectrum", *SP, "--space", "digits-progressive", "--threshold", "1e309")

    # ---------------------------------------------------------------- plot --export
    # The export fixture names the search it exports by absolute path: each case points it at the sandbox's copy,
    # so only the edited value is wrong.
    PX = ["srch", "--checkpoint", "digits", "--num", "2", "--export", "exp", "--out", "p"]
    SE2 = ("srch", "exp")
    ours = {"search": f"{SANDBOX}/srch"}
    verdict_rec = {"verdict_seeds": [10000, 10050]}

    def export_edit(tag: str, changes: dict, files: dict | None = None, note: str = "") -> None:
        case(f"plot-export-{tag}", "plot", *PX, fixtures=SE2, edits={"exp/export.json": changes}, files=files,
             note=note)

    export_edit("verdict-list", {**ours, "verdict": [1, 2]})
    export_edit("verdict-string", {**ours, "verdict": "yes"})
    export_edit("verdict-empty-record", {**ours, "verdict": {}}, note="a verdict record without its fields")
    export_edit("verdict-no-columns", {**ours, "verdict": verdict_rec},
                note="a verdict record, but front.csv has no verdict columns")
    export_edit("front-csv-missing", {**ours, "verdict": verdict_rec}, files={"exp/front.csv": None})
    export_edit("front-csv-garbage", {**ours, "verdict": verdict_rec}, files={"exp/front.csv": "a,b\n1,2\n"})
    export_edit("other-search", {"search": "/nonexistent/srch", "verdict": verdict_rec},
                note="an export of another search (with a verdict)")
    case("plot-export-manifest-not-json", "plot", *PX, fixtures=SE2, files={"exp/export.json": NOT_JSON})
    case("plot-export-manifest-list", "plot", *PX, fixtures=SE2, files={"exp/export.json": "[1, 2]"})
    case("plot-export-joint-export", "plot", "srch", "--checkpoint", "digits", "--num", "2", "--export", "jexp",
         "--out", "p", fixtures=("srch", "jexp"), note="an export-steps report")


build_table()

# ----------------------------------------------------------------------------------------------- sandboxes


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: (kind, size, mtime_ns, sha256 of files <= 4 MiB); folder entries only by kind."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                digest = None
                if st.st_size <= 4 << 20:
                    try:
                        digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                    except OSError:
                        digest = "unreadable"
                out[rel] = ("file", st.st_size, st.st_mtime_ns, digest)
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


def diff_snapshots(before: dict, after: dict) -> dict[str, list[str]]:
    return {"added": sorted(set(after) - set(before)),
            "removed": sorted(set(before) - set(after)),
            "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k])}


def top_level(path: Path) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def setup_sandbox(c: Case, sandbox: Path, fixture_dir: Path | None) -> str | None:
    """Create the case's files; return a skip reason, or None."""
    if c.readonly and IS_ROOT:
        return "running as root: permissions do not stop writes (see the /proc and below-file cases)"
    for name in c.fixtures:
        src = fixture_dir / name if fixture_dir else None
        if src is None or not src.exists():
            return f"fixture {name} unavailable"
        dst = sandbox / name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    for d in c.dirs:
        (sandbox / d).mkdir(parents=True, exist_ok=True)
    for rel, content in c.files.items():
        p = sandbox / rel
        if content is None:  # a fixture's file the case takes away
            _remove(p)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    for rel, changes in c.edits.items():
        edit_json(sandbox / rel, changes, sandbox)
    for d in c.readonly:
        os.chmod(sandbox / d, 0o555)
    for p in c.outside:
        if os.path.lexists(p):
            return f"{p} exists before the case (left by an earlier run?): remove it, then rerun"
    return None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def edit_json(path: Path, changes: dict[str, Any], sandbox: Path) -> None:
    """Change one JSON file in place, as a user's hand edit would (see :class:`Case`'s ``edits``)."""
    doc = json.loads(path.read_text())
    raws: dict[str, str] = {}
    real = os.path.realpath(sandbox)
    for dotted, value in changes.items():
        if callable(value):
            value = value()
        if isinstance(value, Raw):
            token = f"@raw{len(raws)}@"
            raws[token] = str(value)
            value = token
        elif isinstance(value, str):
            value = value.replace(SANDBOX, real)
        *parents, last = dotted.split(".")
        node = doc
        for k in parents:
            node = node[int(k)] if isinstance(node, list) else node[k]
        key = int(last) if isinstance(node, list) else last
        if value is DROP:
            del node[key]
        else:
            node[key] = value
    text = json.dumps(doc, indent=1)  # NaN and Infinity as Python (and a hand edit) writes them
    for token, raw in raws.items():
        text = text.replace(json.dumps(token), raw)
    path.write_text(text)


def remove_tree(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            try:
                os.chmod(os.path.join(dirpath, d), 0o755)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- processes


def token_pids(token: str) -> list[int]:
    """Processes whose environment carries this case's token (the case and anything it spawned, Ray included)."""
    needle = f"{TOKEN_VAR}={token}".encode()
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def rss_bytes(pids: list[int]) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def kill_token(token: str) -> int:
    n = 0
    for _ in range(3):
        pids = token_pids(token)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                n += 1
            except OSError:
                pass
        time.sleep(0.2)
    return n


def ddsm_command() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "ddsm"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ddsm")
    return [found] if found else [sys.executable, "-m", "ddsm.cli"]


def case_env(token: str) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", TOKEN_VAR: token, "PYTHONUNBUFFERED": "1"}


class Job:
    """One running case: a subprocess, or a forked child running CliRunner."""

    def __init__(self, c: Case, sandbox: Path, io_dir: Path, in_process: bool, threads: int = 1) -> None:
        self.case, self.sandbox, self.io_dir, self.in_process = c, sandbox, io_dir, in_process
        self.token = uuid.uuid4().hex
        self.start = time.monotonic()
        self.killed: str | None = None
        self.returncode: int | None = None
        self.peak_rss = 0
        if in_process:
            self.pid = _fork_case(c, sandbox, io_dir, self.token, threads)
            self.proc = None
        else:
            env = {**os.environ, **case_env(self.token)}
            self._out = open(io_dir / "stdout", "wb")
            self._err = open(io_dir / "stderr", "wb")
            self.proc = subprocess.Popen(ddsm_command() + list(c.argv), cwd=sandbox, env=env, stdin=subprocess.DEVNULL,
                                         stdout=self._out, stderr=self._err, start_new_session=True)
            self.pid = self.proc.pid

    def poll(self) -> bool:
        if self.returncode is not None:
            return True
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return False
            self.returncode = rc
        else:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return False
            self.returncode = os.waitstatus_to_exitcode(status)
        return True

    def kill(self, why: str) -> None:
        self.killed = why
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        kill_token(self.token)
        if self.proc is not None:
            self.returncode = self.proc.wait()
        else:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)

    def finish(self) -> dict[str, Any]:
        """Exit code, stdout and stderr as the user would have seen them."""
        leaked = kill_token(self.token)  # Ray daemons and other leftovers of the case
        seconds = time.monotonic() - self.start
        if self.proc is not None:
            self._out.close()
            self._err.close()
        stdout = _read(self.io_dir / "stdout")
        stderr = _read(self.io_dir / "stderr")
        exit_code = self.returncode
        if self.in_process:
            res_file = self.io_dir / "result.json"
            if res_file.exists():
                res = json.loads(res_file.read_text())
                exit_code = res["exit_code"]
                stdout = res["stdout"] + stdout
                # fd-level writes (C libraries, child processes) come after what click captured
                stderr = res["stderr"] + res["traceback"] + stderr
            elif self.killed is None:
                stderr += f"\n[fuzz] forked child died without a result (status {self.returncode})"
        return {"exit_code": exit_code, "stdout": stdout, "stderr": stderr, "seconds": round(seconds, 2),
                "killed": self.killed, "leaked_processes": leaked, "peak_rss_mb": round(self.peak_rss / 2**20)}


def _read(path: Path, limit: int = 1 << 20) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _fork_case(c: Case, sandbox: Path, io_dir: Path, token: str, threads: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    # ---- child: never returns
    code = 0
    try:
        os.setsid()
        os.chdir(sandbox)
        os.environ.update(case_env(token))
        import torch

        torch.set_num_threads(threads)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            f = os.open(io_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        from click.testing import CliRunner

        from ddsm.cli import main

        r = CliRunner().invoke(main, list(c.argv), prog_name="ddsm", catch_exceptions=True)
        tb = ""
        if r.exception is not None and not isinstance(r.exception, SystemExit) and r.exc_info is not None:
            tb = "".join(traceback.format_exception(*r.exc_info))
        payload = {"exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr, "traceback": tb}
        tmp = io_dir / "result.json.tmp"
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, io_dir / "result.json")
    except BaseException:  # noqa: BLE001 - report whatever happened to the parent
        try:
            os.write(2, traceback.format_exc().encode())
        except OSError:
            pass
        code = 70
    finally:
        os._exit(code)


def preload() -> None:
    """Import what the commands import lazily, once, before forking (that is the in-process mode's saving)."""
    import importlib

    for mod in ("click.testing", "ddsm.cli", "torch", "numpy", "pandas", "yaml", "safetensors", "ddsm.config",
                "ddsm.checkpoint", "ddsm.device", "ddsm.train", "ddsm.samplers", "ddsm.schedule", "ddsm.cost",
                "ddsm.metrics.featurenet", "ddsm.metrics.fid", "ddsm.metrics.verdict", "ddsm.spectrum",
                "ddsm.search", "ddsm.search.setup", "ddsm.search.folder", "ddsm.search.loop", "ddsm.report",
                "ddsm.images", "ddsm.data", "ddsm.sweep", "ddsm.quickstart", "ddsm.run_configs", "ddsm.distill",
                "ddsm.slim", "ddsm.search.joint", "ddsm.report.joint", "ddsm.integrations.diffusers_folder",
                "diffusers"):
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - a broken module shows up in the cases that need it
            print(f"[fuzz] preload of {mod} failed: {type(e).__name__}: {e}", file=sys.stderr)
    try:  # diffusers imports its models lazily: ~2 s in every slim case otherwise
        import diffusers

        diffusers.UNet2DModel, diffusers.DDPMScheduler  # noqa: B018
    except Exception:  # noqa: BLE001
        pass


# ----------------------------------------------------------------------------------------------- classification

#: the kinds of writing a case may not do, as ``written`` records them
WRITTEN = ("added", "changed", "removed", "cwd_added", "outside_added")
OUTCOMES = ("ok", "traceback", "multi-line", "wrong-exit", "wrote", "hang", "skip")
#: the outcome shown when a case has several problems: the first of these it has
PRIORITY = ("hang", "traceback", "wrong-exit", "wrote", "multi-line")


def classify(result: dict[str, Any]) -> tuple[str, list[str]]:
    """(outcome, every problem) of one finished case.

    ``result`` needs exit_code, stderr, killed (None or a reason) and written
    ({added, removed, changed} paths, plus cwd_added and outside_added); stdout is also searched for tracebacks.
    """
    if result.get("skipped"):
        return "skip", []
    problems: list[str] = []
    stderr = result.get("stderr") or ""
    stdout = result.get("stdout") or ""
    if result.get("killed"):
        problems.append("hang")
    if "Traceback (most recent call last)" in stderr or "Traceback (most recent call last)" in stdout:
        problems.append("traceback")
    if not result.get("killed") and result.get("exit_code") != 2:
        problems.append("wrong-exit")
    w = result.get("written") or {}
    if any(w.get(k) for k in WRITTEN):
        problems.append("wrote")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if not (len(lines) == 1 and lines[0].startswith("Error: ")):
        problems.append("multi-line")
    for p in PRIORITY:
        if p in problems:
            return p, problems
    return "ok", problems


def first_line(text: str) -> str:
    """The line to show: the last line of a traceback (the exception), else the first non-empty line."""
    lines = [ln.rstrip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        exc = [ln for ln in lines if not ln.startswith(" ") and ":" in ln and not ln.startswith("Traceback")]
        return exc[-1] if exc else lines[-1]
    return lines[0]


# ----------------------------------------------------------------------------------------------- fixtures


def build_fixtures(dest: Path, *, timeout: float = 300) -> dict[str, str]:
    """Build every fixture once, in ``dest``; returns {name: error} for those that could not be built.

    srch: a finished tiny search; exp: its export; sched.json: one of its schedules; trun: a tiny training run;
    drun: a tiny distillation of trun; diff: a tiny diffusers UNet2DModel folder; srun: a tiny slim run of it;
    joint: a finished tiny joint (steps x widths) search; jexp: its export-steps report; ksched.json: its
    2-step student's schedule. Two waves of commands run side by side (the second needs the first's outputs).
    """
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "space.yaml").write_text(TINY_SPACE)
    (dest / "tiny.yaml").write_text(TINY_CONFIG)
    (dest / "joint.yaml").write_text(TINY_JOINT)
    # one torch thread each: four processes on a 2-core machine with a thread pool each took 5x as long
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = ddsm_command()
    errors: dict[str, str] = {}
    waves = [
        [("srch", cmd + ["search", "--space", "space.yaml", "--checkpoint", "digits", "--out", "srch", "--runner",
                         "serial", "--no-progress"]),
         ("trun", cmd + ["train", "--config", "tiny.yaml", "--out", "trun", "--no-progress"]),
         ("diff", [sys.executable, "-c", DIFFUSERS_FOLDER_SCRIPT, "diff"]),
         ("joint", cmd + ["search-steps", "--space", "joint.yaml", "--out", "joint", "--no-progress"])],
        [("exp", cmd + ["export", "srch", "--checkpoint", "digits", "--out", "exp", "--repeats", "1", "--warmup", "0",
                        "--num", "2", "--no-progress"]),
         ("drun", cmd + ["distill", "--teacher", "trun", "--steps", "2", "--iters", "1", "--out", "drun",
                         "--no-progress"]),
         # widths 0.5 and 1: the default 0.25 splits the tiny model's GroupNorm groups
         ("srun", cmd + ["slim", "--from-diffusers", "diff", "--width", "0.5", "--iters", "1", "--data", "digits",
                         "--out", "srun", "--no-progress"]),
         ("jexp", cmd + ["export-steps", "joint", "--out", "jexp", "--no-progress"])],
    ]
    needs = {"exp": "srch", "drun": "trun", "srun": "diff", "jexp": "joint"}
    for wave in waves:
        procs = {}
        for name, argv in wave:
            if needs.get(name) in errors:
                errors[name] = f"needs {needs[name]}"
                continue
            procs[name] = subprocess.Popen(argv, cwd=dest, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           text=True)
        deadline = time.monotonic() + timeout
        for name, proc in procs.items():
            try:
                _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                if proc.returncode != 0:
                    errors[name] = first_line(err) or f"exit {proc.returncode}"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                errors[name] = "timed out"
            if name in errors:
                shutil.rmtree(dest / name, ignore_errors=True)
    for name, folder, pattern in (("sched.json", "exp", "front-*.json"), ("ksched.json", "jexp", "front-*-k2-*.json")):
        found = sorted((dest / folder).glob(pattern)) if (dest / folder).is_dir() else []
        if found:
            shutil.copy2(found[0], dest / name)
        else:
            errors[name] = f"no schedule in {folder}"
    return errors


# ----------------------------------------------------------------------------------------------- running


def select(cases: list[Case], only: str | None) -> list[Case]:
    if not only:
        return list(cases)
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [c for c in cases if any(fnmatch.fnmatch(c.id, p) if any(ch in p for ch in "*?[") else p in c.id
                                    for p in pats)]


def sample(cases: list[Case], every: int) -> list[Case]:
    """A fixed stratified subset: the first case of every command, then every ``every``-th case of the table
    (the default test suite's share; the whole table runs with ``-m slow``)."""
    if every < 1:
        raise ValueError(f"--sample {every} must be a whole number of at least 1")
    first = {}
    for c in cases:
        first.setdefault(c.command, c.id)
    keep = set(first.values())
    return [c for i, c in enumerate(cases) if i % every == 0 or c.id in keep]


def run_cases(cases: list[Case], *, fixture_dir: Path | None, in_process: bool = False, timeout: float = 60,
              jobs: int = 1, mem_limit_gb: float = 6.0, verbose: bool = True) -> list[dict[str, Any]]:
    """Run every case (``jobs`` at a time) and return one result dict per case, in table order."""
    if in_process:
        preload()
    # torch threads per in-process case: two cases with a pool of every core each ran several times slower
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    work = Path(tempfile.mkdtemp(prefix="ddsm-fuzz-"))
    launch_cwd = Path.cwd()
    cwd_before = top_level(launch_cwd)
    results: dict[str, dict[str, Any]] = {}
    pending = list(cases)
    running: list[tuple[Job, dict]] = []
    last_mem = 0.0
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                c = pending.pop(0)
                sandbox = work / c.id / "sandbox"
                io_dir = work / c.id / "io"
                sandbox.mkdir(parents=True)
                io_dir.mkdir()
                skip = setup_sandbox(c, sandbox, fixture_dir)
                base = {"id": c.id, "command": c.command, "argv": list(c.argv), "note": c.note,
                        "mode": "in-process" if in_process else "subprocess"}
                if skip:
                    res = {**base, "skipped": skip, "exit_code": None, "stdout": "", "stderr": "", "seconds": 0,
                           "killed": None, "written": {}}
                    _finish(res, results, verbose)
                    remove_tree(work / c.id)
                    continue
                before = snapshot(sandbox)
                running.append((Job(c, sandbox, io_dir, in_process, threads), {**base, "_before": before}))
            time.sleep(0.05)
            now = time.monotonic()
            check_mem = now - last_mem > 0.5
            if check_mem:
                last_mem = now
            for job, base in list(running):
                if not job.poll():
                    if now - job.start > timeout:
                        job.kill(f"timeout after {timeout:g} s")
                    elif check_mem:
                        rss = rss_bytes(token_pids(job.token))
                        job.peak_rss = max(job.peak_rss, rss)
                        if rss > mem_limit_gb * 2**30:
                            job.kill(f"memory over {mem_limit_gb:g} GB")
                    if job.returncode is None:
                        continue
                running.remove((job, base))
                res = {**base, **job.finish()}
                after = snapshot(job.sandbox)
                written = diff_snapshots(res.pop("_before"), after)
                new_cwd = sorted(top_level(launch_cwd) - cwd_before)
                written["cwd_added"] = new_cwd
                cwd_before |= set(new_cwd)
                # a path outside the sandbox the case named (ddsm's own package folder): noticed, then removed
                written["outside_added"] = [q for q in job.case.outside if os.path.lexists(q)]
                for q in written["outside_added"]:
                    _remove(Path(q))
                res["written"] = written
                _finish(res, results, verbose)
                remove_tree(work / job.case.id)
    finally:
        for job, _ in running:
            job.kill("interrupted")
        remove_tree(work)
    return [results[c.id] for c in cases]


def _finish(res: dict, results: dict, verbose: bool) -> None:
    res["outcome"], res["problems"] = classify(res)
    res["first_line"] = res.get("skipped") or first_line(res.get("stderr", ""))
    if res.get("killed"):
        res["first_line"] = f"[killed: {res['killed']}] " + res["first_line"]
    res["stderr"] = (res.get("stderr") or "")[-8000:]
    res["stdout"] = (res.get("stdout") or "")[-2000:]
    results[res["id"]] = res
    if verbose:
        print(f"{res['id']:<44} {res['outcome']:<10} {res.get('exit_code')!s:>4} {res.get('seconds', 0):>6.1f}s  "
              f"{res['first_line'][:100]}", flush=True)


def totals(results: list[dict]) -> dict[str, int]:
    flag = lambda name: sum(name in r["problems"] for r in results)  # noqa: E731
    return {
        "inputs tried": sum(r["outcome"] != "skip" for r in results),
        "ok": sum(r["outcome"] == "ok" for r in results),
        "tracebacks": flag("traceback"),
        "multi-line": sum(r["outcome"] == "multi-line" for r in results),
        "accepted (exit 0)": sum(r.get("exit_code") == 0 and not r.get("killed") for r in results),
        "other wrong exit": sum("wrong-exit" in r["problems"] and r.get("exit_code") != 0 for r in results),
        "files left or overwritten": flag("wrote"),
        "hangs": flag("hang"),
        "skipped": sum(r["outcome"] == "skip" for r in results),
    }


def print_table(results: list[dict]) -> None:
    print()
    print(f"{'case':<44} {'command':<11} {'outcome':<10} {'exit':>4}  first line of stderr")
    for r in results:
        extra = ""
        w = r.get("written") or {}
        if "wrote" in r["problems"]:
            bits = [f"{k}: {', '.join(w[k][:3])}" for k in WRITTEN if w.get(k)]
            extra = "  [" + "; ".join(bits) + "]"
        print(f"{r['id']:<44} {r['command']:<11} {r['outcome']:<10} {r.get('exit_code')!s:>4}  "
              f"{r['first_line'][:110]}{extra[:160]}")
    print()
    for k, v in totals(results).items():
        print(f"{k:>28}: {v}")


def write_results(results: list[dict], out_dir: Path, stem: str, meta: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, cpath = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    doc = {"kind": "ddsm.fuzz_cli", **meta, "totals": totals(results), "cases": results}
    _atomic_write(jpath, json.dumps(doc, indent=1) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "command", "outcome", "problems", "exit_code", "seconds", "first_line", "written", "argv"])
    for r in results:
        wr = r.get("written") or {}
        w.writerow([r["id"], r["command"], r["outcome"], " ".join(r["problems"]), r.get("exit_code"),
                    r.get("seconds"), r["first_line"],
                    " ".join(f"{k}:{p}" for k in WRITTEN for p in wr.get(k, [])),
                    " ".join(r["argv"])])
    _atomic_write(cpath, buf.getvalue())
    return jpath, cpath


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compare(results: list[dict], other_file: Path) -> None:
    other = {r["id"]: r for r in json.loads(other_file.read_text())["cases"]}
    diff = [(r["id"], r["outcome"], other[r["id"]]["outcome"]) for r in results
            if r["id"] in other and r["outcome"] != other[r["id"]]["outcome"]]
    same = sum(1 for r in results if r["id"] in other) - len(diff)
    print(f"\ncompared with {other_file}: {same} cases agree, {len(diff)} differ")
    for cid, a, b in diff:
        print(f"  {cid}: {a} (this run) vs {b} ({other_file.name})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="case ids containing this (comma-separated; glob patterns allowed)")
    ap.add_argument("--sample", type=int, default=1, help="run the first case of each command and every N-th case "
                    "[1: every case]")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang [60]")
    ap.add_argument("--in-process", action="store_true", help="CliRunner in a forked child per case (import once)")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once [2]")
    ap.add_argument("--mem-limit-gb", type=float, default=6.0, help="resident memory of a case counted as a hang [6]")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for fuzz-cli.json/.csv [experiments/results]")
    ap.add_argument("--list", action="store_true", help="print the case ids and argv, run nothing")
    ap.add_argument("--compare", type=Path, help="results JSON of another run: list the cases whose outcome differs")
    args = ap.parse_args(argv)

    try:
        cases = sample(select(CASES, args.only), args.sample)
    except ValueError as e:  # a bad --sample
        print(f"Error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for c in cases:
            print(f"{c.id:<44} ddsm {' '.join(c.argv)}")
        print(f"{len(cases)} cases")
        return 0
    if not cases:
        print(f"no case matches {args.only!r}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    fixture_dir = Path(tempfile.mkdtemp(prefix="ddsm-fuzz-fixtures-"))
    try:
        needed = {f for c in cases for f in c.fixtures}
        fixture_errors = build_fixtures(fixture_dir) if needed else {}
        for name, err in fixture_errors.items():
            print(f"[fuzz] fixture {name} could not be built: {err}", file=sys.stderr)
        t_fix = time.monotonic() - t0
        print(f"[fuzz] fixtures built in {t_fix:.0f} s; running {len(cases)} cases "
              f"({'in-process' if args.in_process else 'subprocess'}, {args.jobs} at a time, timeout {args.timeout:g} s)",
              flush=True)
        t1 = time.monotonic()
        results = run_cases(cases, fixture_dir=fixture_dir, in_process=args.in_process, timeout=args.timeout,
                            jobs=args.jobs, mem_limit_gb=args.mem_limit_gb)
        t_run = time.monotonic() - t1
    finally:
        shutil.rmtree(fixture_dir, ignore_errors=True)
    print_table(results)
    print(f"{'cases wall time':>28}: {t_run:.0f} s (+{t_fix:.0f} s fixtures)")
    stem = "fuzz-cli-in-process" if args.in_process else "fuzz-cli"
    meta = {"mode": "in-process" if args.in_process else "subprocess", "timeout_s": args.timeout, "jobs": args.jobs,
            "root": IS_ROOT, "seconds": round(t_run, 1), "fixture_seconds": round(t_fix, 1),
            "fixture_errors": fixture_errors, "only": args.only, "sample": args.sample}
    jpath, cpath = write_results(results, args.out, stem, meta)
    print(f"-> {jpath}, {cpath}")
    if args.compare:
        compare(results, args.compare)
    return 0 if all(r["outcome"] in ("ok", "skip") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
