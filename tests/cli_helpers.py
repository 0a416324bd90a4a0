"""Helpers shared by the CLI tests."""

from pathlib import Path

import yaml
from click.testing import CliRunner

from ddsm.cli import main

#: a search small enough for the tiny trained supernet of conftest.py (seconds)
TINY_SEARCH_SPACE = {
    "widths": [0.25, 0.5, 0.75, 1.0],
    "sampler": {"kind": "ddim", "steps": 4},
    "segments": 2,
    "budget": 0.6,
    "objectives": {"quality": "proxy", "cost": "flops"},
    "population": 4,
    "generations": 2,
    "seed": 0,
    "seeding": {"uniform": True, "two_segment": [0.5], "n_random": 1, "sensitivity": False},
    "evaluator": {"num_samples": 2, "seed": 0, "batch_size": 8},
}


def write_space(path: Path, **changes) -> Path:
    """Write TINY_SEARCH_SPACE with top-level ``changes`` as YAML to ``path``."""
    path.write_text(yaml.safe_dump({**TINY_SEARCH_SPACE, **changes}))
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_bad_input(result, *needles: str) -> str:
    """Exit status 2, exactly one line, 'Error: ...', no traceback."""
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def search_and_export(checkpoint, tmp_path: Path, sampler: dict) -> list[Path]:
    """``ddsm search`` of the tiny space with ``sampler``, then ``ddsm export`` (one timing repeat); the exported
    front's schedule files, cheapest first."""
    space = write_space(tmp_path / "space.yaml", sampler=sampler)
    r = invoke("search", "--space", space, "--checkpoint", checkpoint, "--out", tmp_path / "search", "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("export", tmp_path / "search", "--checkpoint", checkpoint, "--out", tmp_path / "export",
               "--repeats", "1", "--warmup", "0", "--no-progress")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "export").glob("front-*.json"))
    assert files
    return files


def slim_briefly(tmp_path: Path, folder, out, *extra: str):
    """``ddsm slim --from-diffusers folder`` for two steps of 8 images at widths 0.5 and 1, into ``out``."""
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("train: {iters: 2, batch_size: 8, checkpoint_every: 1000, threads: 1}\n")
    return invoke("slim", "--from-diffusers", folder, "--width", "0.5", "--config", cfg, "--out", out,
                  "--no-progress", *extra)
