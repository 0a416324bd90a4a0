"""Input limits (issue 13): every bad or oversized value is one 'Error:' line, exit 2, before anything is written.

Each test runs the CLI and checks the refusal names the bad value and that
the tmp folder holds exactly what the test put there (no output, no lock).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from ddsm.checkpoint import load_supernet, read_tensors, save_tensors
from ddsm.config import MAX_TIMESTEPS, load_yaml
from ddsm.errors import DDSMError
from ddsm.limits import MAX_GRID_SAMPLES, MAX_MESSAGE_CHARS, MAX_SEED, MAX_YAML_ALIASES
from ddsm.samplers import SamplerConfig
from ddsm.schedule import Schedule
from ddsm.search import SearchConfig

from conftest import run_config_dict
from cli_helpers import assert_bad_input, invoke, write_space

HUGE = 10**12  # samples: terabytes of output on any machine


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(tmp_path: Path, *args, needles=()) -> str:
    """Run the CLI; assert a one-line refusal naming ``needles`` and that nothing appeared under ``tmp_path``."""
    before = _files(tmp_path)
    r = invoke(*args)
    line = assert_bad_input(r, *needles)
    assert len(line) <= MAX_MESSAGE_CHARS + len("Error: "), len(line)
    assert _files(tmp_path) == before, _files(tmp_path) - before
    return line


def _bomb(levels: int = 9, fan: int = 9) -> str:
    """The 'billion laughs' YAML: ``fan**levels`` strings from under 1 KB (fan * (levels - 1) aliases)."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- config files


@pytest.mark.parametrize("command", ["train", "search"])
def test_a_yaml_bomb_is_refused_in_one_short_line(tmp_path, command, trained_run):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb())
    assert len(bomb.read_bytes()) < 1024 and _bomb().count("*") <= MAX_YAML_ALIASES  # the alias count alone passes
    args = (["train", "--config", bomb, "--out", tmp_path / "run", "--no-progress"] if command == "train" else
            ["search", "--space", bomb, "--checkpoint", trained_run, "--out", tmp_path / "s", "--no-progress"])
    refused(tmp_path, *args, needles=["bomb.yaml", "expands to more than"])


def test_too_many_yaml_aliases_are_refused(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text("x: &x 1\nl: [" + ", ".join(["*x"] * (MAX_YAML_ALIASES + 1)) + "]\n")
    refused(tmp_path, "train", "--config", path, "--out", tmp_path / "run", needles=["aliases.yaml", "aliases"])


def test_a_recursive_yaml_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(DDSMError, match="recursive YAML alias"):
        load_yaml(path)


def test_an_oversized_config_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 120_000)  # 1.2 MB of comments
    refused(tmp_path, "train", "--config", path, "--out", tmp_path / "run", needles=["big.yaml", "1 MiB"])


def test_a_binary_config_file_is_one_line(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    refused(tmp_path, "train", "--config", path, "--out", tmp_path / "run", needles=["bin.yaml", "UTF-8"])


def test_a_huge_quoted_value_is_cut_short(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"model": {"unet": {"image_size": "x" * 500_000}}}))
    line = refused(tmp_path, "train", "--config", path, "--out", tmp_path / "run", needles=["image_size", "chars)"])
    assert "xxxx" in line


def test_an_empty_search_space_is_an_error_naming_the_file(tmp_path, trained_run):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    refused(tmp_path, "search", "--space", path, "--checkpoint", trained_run, "--out", tmp_path / "s",
            needles=["empty.yaml", "is empty"])


# ---------------------------------------------------------------------------- config fields


def test_a_huge_base_channels_is_refused_from_the_config(tmp_path):
    cfg = run_config_dict()
    cfg["model"]["unet"]["base_channels"] = 10**8
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(cfg))
    refused(tmp_path, "train", "--config", path, "--out", tmp_path / "run", needles=["base_channels 100000000",
                                                                                     "parameters", "limit"])


def test_a_huge_num_timesteps_is_refused_from_the_config(tmp_path):
    cfg = run_config_dict()
    cfg["model"]["diffusion"]["num_timesteps"] = 10**12
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))
    refused(tmp_path, "train", "--config", path, "--out", tmp_path / "run",
            needles=["num_timesteps", str(MAX_TIMESTEPS), "1000000000000"])


def test_a_crafted_checkpoint_header_is_validated_the_same_way(tmp_path, trained_run):
    tensors, header = read_tensors(trained_run / "supernet.safetensors")
    header["model"]["diffusion"]["num_timesteps"] = 10**12
    save_tensors(tmp_path / "crafted.safetensors", tensors, header)
    refused(tmp_path, "sample", "--checkpoint", tmp_path / "crafted.safetensors", "--width", "1.0", "--num", "2",
            "--out", tmp_path / "out", "--no-progress", needles=["num_timesteps", str(MAX_TIMESTEPS)])


@pytest.mark.parametrize("widths, needle", [(["0.5", "1.0"], "'0.5'"), ([0.5, 0.5, 1.0], "0.5 given twice")],
                         ids=["strings", "duplicate"])
def test_search_space_widths_are_strict(tmp_path, trained_run, widths, needle):
    space = write_space(tmp_path / "space.yaml", widths=widths, population=2)
    refused(tmp_path, "search", "--space", space, "--checkpoint", trained_run, "--out", tmp_path / "s",
            needles=["widths", needle])


def test_widths_keep_their_order_rule_and_accept_ints():
    assert SearchConfig(widths=[1, 0.5, 0.25], population=4).widths == (0.25, 0.5, 1.0)


# ---------------------------------------------------------------------------- seeds and counts


@pytest.mark.parametrize("seed, num", [(-1, 2), (2**64, 2), (MAX_SEED, 2)], ids=["negative", "2**64", "last-past"])
def test_sample_seeds_must_stay_in_range(tmp_path, trained_run, seed, num):
    refused(tmp_path, "sample", "--checkpoint", trained_run, "--width", "1.0", "--num", num, "--seed", seed,
            "--steps", "2", "--out", tmp_path / "out", "--no-progress", needles=[f"--seed {seed}", "2**63-1"])


def test_the_largest_seed_itself_is_fine(tmp_path, trained_run):
    r = invoke("sample", "--checkpoint", trained_run, "--width", "1.0", "--num", 1, "--seed", MAX_SEED,
               "--steps", "2", "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("command", ["sample", "evaluate", "verdict"])
def test_a_sample_count_that_cannot_fit_in_memory_is_refused(tmp_path, trained_run, command):
    args = {"sample": ["--out", tmp_path / "out", "--steps", "2"], "evaluate": ["--steps", "2"],
            "verdict": ["--steps", "2"]}[command]
    line = refused(tmp_path, command, "--checkpoint", trained_run, "--width", "1.0", "--num", HUGE, *args,
                   "--no-progress", needles=[f"--num {HUGE}", "GiB", "use --num <="])
    assert int(line.rsplit("<=", 1)[1]) > 1000  # it says how many fit


@pytest.mark.parametrize("num", ["0", "-3"])
def test_evaluate_refuses_a_non_positive_num(tmp_path, trained_run, num):
    refused(tmp_path, "evaluate", "--checkpoint", trained_run, "--width", "1.0", "--num", num, "--no-progress",
            needles=[f"--num {num}", "positive"])


def test_evaluate_seeds_must_stay_in_range(tmp_path, trained_run):
    refused(tmp_path, "evaluate", "--checkpoint", trained_run, "--width", "1.0", "--seed", 2**64, "--no-progress",
            needles=[f"--seed {2**64}", "2**63-1"])


def test_verdict_seeds_must_stay_in_range(tmp_path, trained_run):
    refused(tmp_path, "verdict", "--checkpoint", trained_run, "--width", "1.0", "--teacher-seed", -1,
            "--no-progress", needles=["--teacher-seed -1", "2**63-1"])


def _search_dir(tmp_path: Path) -> Path:
    d = tmp_path / "search"
    d.mkdir()
    return d


def test_export_checks_budgets_num_and_seed_first(tmp_path, trained_run):
    d = _search_dir(tmp_path)
    base = ["export", d, "--checkpoint", trained_run, "--out", tmp_path / "export", "--no-progress"]
    refused(tmp_path, *base, "--budget", "2", needles=["--budget 2.0", "(0, 1]"])
    refused(tmp_path, *base, "--budget", "nan", needles=["--budget nan", "(0, 1]"])
    refused(tmp_path, *base, "--num", "0", needles=["--batch-size 0", "positive"])
    refused(tmp_path, *base, "--batch-size", "-3", needles=["--batch-size -3", "positive"])
    refused(tmp_path, *base, "--seed", 2**64, needles=[f"--seed {2**64}", "2**63-1"])
    refused(tmp_path, *base, "--verdict", 50, "--verdict-seed", -4, needles=["--verdict-seed -4", "2**63-1"])


@pytest.mark.parametrize("num", [10**9, 0], ids=["huge", "zero"])
def test_plot_num_is_a_grid_size(tmp_path, trained_run, num):
    d = _search_dir(tmp_path)
    refused(tmp_path, "plot", d, "--checkpoint", trained_run, "--out", tmp_path / "plots", "--num", num,
            needles=[f"--num {num}", f"1..{MAX_GRID_SAMPLES}"])


def test_plot_seeds_must_stay_in_range(tmp_path, trained_run):
    d = _search_dir(tmp_path)
    refused(tmp_path, "plot", d, "--checkpoint", trained_run, "--out", tmp_path / "plots", "--seed", -1,
            needles=["--seed -1", "2**63-1"])


# ---------------------------------------------------------------------------- other options


def test_a_non_json_cost_table_is_one_line(tmp_path, trained_run):
    space = write_space(tmp_path / "space.yaml")
    bad = tmp_path / "cost.bin"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xff binary")
    refused(tmp_path, "search", "--space", space, "--checkpoint", trained_run, "--cost", bad, "--out", tmp_path / "s",
            "--no-progress", needles=["cost.bin", "not valid JSON"])
    bad.write_text("[" * 100_000 + "]" * 100_000)
    refused(tmp_path, "search", "--space", space, "--checkpoint", trained_run, "--cost", bad, "--out", tmp_path / "s",
            "--no-progress", needles=["cost.bin", "JSON"])


@pytest.mark.parametrize("side, needle", [(4096, "GiB"), (0, "positive multiple"), (-8, "positive multiple")])
def test_cost_resolutions_are_bounded(tmp_path, trained_run, side, needle):
    refused(tmp_path, "cost", "--checkpoint", trained_run, "--resolution", side, "--out", tmp_path / "cost.json",
            "--repeats", "1", "--warmup", "0", "--no-progress", needles=[f"resolution {side}", needle])


def test_featurenet_channels_are_1_or_3(tmp_path):
    refused(tmp_path, "featurenet", "--channels", "2", "--out", tmp_path / "f.safetensors", "--no-progress",
            needles=["--channels 2", "1 (grayscale) or 3 (RGB)"])


@pytest.mark.parametrize("value", ["nan", "0", "-1", "inf"])
def test_spectrum_threshold_must_be_finite_and_positive(tmp_path, trained_run, value):
    refused(tmp_path, "spectrum", "--checkpoint", trained_run, "--threshold", value, "--out", tmp_path / "s.json",
            needles=["--threshold", "finite number > 0"])


@pytest.mark.parametrize("eta", ["1e308", "nan", "inf", "-0.5", "1.5"])
def test_ddim_eta_lies_in_0_1(tmp_path, trained_run, eta):
    line = refused(tmp_path, "sample", "--checkpoint", trained_run, "--width", "1.0", "--num", "2", "--eta", eta,
                   "--steps", "2", "--out", tmp_path / "out", "--no-progress", needles=["eta"])
    assert "got" in line


def test_sampler_config_refuses_eta_outside_0_1_everywhere():
    from pydantic import ValidationError

    for eta in (math.nan, math.inf, -0.1, 1.0001, 1e308):
        with pytest.raises(ValidationError):
            SamplerConfig(eta=eta)
    assert SamplerConfig(eta=1.0).eta == 1.0


# ---------------------------------------------------------------------------- item 11: one-line warnings


def test_evaluate_shows_the_training_free_warning_in_one_line_like_sample(tmp_path, trained_run):
    from test_progressive import SIDES, STEPS, WIDTHS

    net = load_supernet(trained_run)
    path = tmp_path / "s.json"
    Schedule.for_model(net.config, SamplerConfig(kind="ddim", steps=STEPS), WIDTHS, resolutions=SIDES).save(path)
    r = invoke("evaluate", "--checkpoint", trained_run, "--schedule", path, "--num", 2, "--no-progress")
    assert r.exit_code == 0, r.output
    warn = [ln for ln in r.output.splitlines() if "training-free" in ln]
    assert warn == ["warning: supernet was trained at resolutions [8]; steps at [2, 4] run training-free "
                    "(lower quality expected; fine-tune with train.resolutions)"], r.output
    assert "ResolutionWarning" not in r.output and "plans = " not in r.output
    s = invoke("sample", "--checkpoint", trained_run, "--schedule", path, "--num", 2, "--out", tmp_path / "out",
               "--no-progress")
    assert [ln for ln in s.output.splitlines() if "training-free" in ln][0].startswith("warning: this supernet")


# ---------------------------------------------------------------------------- more sizes


def test_featurenet_size_is_bounded(tmp_path):
    refused(tmp_path, "featurenet", "--size", "100000", "--out", tmp_path / "f.safetensors", "--no-progress",
            needles=["--size 100000", "1..1024"])


@pytest.mark.parametrize("changes, needle", [
    ({"evaluator": {"num_samples": 10**12}}, "evaluator.num_samples"),
    ({"population": 10**12}, "population"),
    ({"generations": 10**12}, "generations"),
    ({"evaluator": {"num_samples": 4, "seed": MAX_SEED}}, "2**63-1"),
], ids=["num-samples", "population", "generations", "seed"])
def test_search_space_sizes_are_bounded(tmp_path, trained_run, changes, needle):
    space = write_space(tmp_path / "space.yaml", **changes)
    refused(tmp_path, "search", "--space", space, "--checkpoint", trained_run, "--out", tmp_path / "s",
            "--no-progress", needles=[needle])


def test_image_size_is_bounded_in_a_train_config(tmp_path):
    cfg = run_config_dict()
    cfg["model"]["unet"]["image_size"] = 100_000 * 2
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(cfg))
    refused(tmp_path, "train", "--config", path, "--out", tmp_path / "run", needles=["image_size", "1024"])
