"""Shared tiny fixtures: every model here is small enough to train and sample in milliseconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

from ddsm.config import DiffusionConfig, ModelConfig, RunConfig, UNetConfig, validate
from ddsm.data import ImageData
from ddsm.nn.unet import SlimUNet

#: 8x8 grayscale, two levels, attention at 4x4; every width gives channels divisible by 2.
TINY_UNET: dict[str, Any] = dict(
    image_size=8, base_channels=8, channel_mults=(1, 2), group_channels=2,
    attn_resolutions=(4,), widths=(0.25, 0.5, 0.75, 1.0),
)
TINY_T = 50
#: a training recipe that takes a few milliseconds per step
TINY_TRAIN: dict[str, Any] = dict(iters=3, batch_size=8, checkpoint_every=1000)


@pytest.fixture
def tiny_unet() -> UNetConfig:
    return UNetConfig(**TINY_UNET)


@pytest.fixture
def tiny_model_config(tiny_unet: UNetConfig) -> ModelConfig:
    return ModelConfig(unet=tiny_unet, diffusion=DiffusionConfig(num_timesteps=TINY_T))


def randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter with seeded normal noise.

    conv_out starts at zero, so a fresh supernet predicts eps = 0 at every
    width; tests comparing outputs need weights that make widths differ.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


@pytest.fixture
def random_supernet(tiny_unet: UNetConfig) -> Callable[..., SlimUNet]:
    """Factory: a tiny supernet with random weights (``seed``), in eval mode."""

    def make(seed: int = 0, config: UNetConfig | None = None) -> SlimUNet:
        return randomise(SlimUNet(config or tiny_unet), seed).eval()

    return make


def run_config_dict(**train: Any) -> dict[str, Any]:
    """The tiny RunConfig as plain data (what a YAML file would hold)."""
    return {
        "model": {"unet": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_UNET.items()},
                  "diffusion": {"num_timesteps": TINY_T}},
        "train": {**TINY_TRAIN, **train},
    }


@pytest.fixture
def tiny_run_config() -> Callable[..., RunConfig]:
    """Factory: the tiny RunConfig with ``train`` fields overridden."""

    def make(**train: Any) -> RunConfig:
        return validate(RunConfig, run_config_dict(**train))

    return make


@pytest.fixture(scope="session")
def tiny_data() -> ImageData:
    """64 training and 8 held-out random 8x8 grayscale images in [-1, 1]."""
    gen = torch.Generator().manual_seed(123)
    x = torch.rand((72, 1, 8, 8), generator=gen) * 2 - 1
    return ImageData("random", x[:64], x[64:])


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write the tiny run config (with ``train`` overrides) to a YAML file."""

    def write(name: str = "tiny.yaml", **train: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(run_config_dict(**train)))
        return path

    return write


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_data: ImageData) -> Path:
    """A finished 3-step training run folder (checkpoint, supernet, config), shared read-only."""
    from ddsm.train import Trainer

    out = tmp_path_factory.mktemp("run")
    cfg = validate(RunConfig, run_config_dict())
    Trainer(cfg, out, device="cpu", data=tiny_data, progress=False).run()
    return out


def training_state(trainer) -> dict[str, torch.Tensor]:
    """Everything of a trainer that must match bit for bit after a resume: weights, EMA, optimizer state."""
    out = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    out.update({f"ema.{k}": v for k, v in trainer.ema.items()})
    for i, st in trainer.opt.state_dict()["state"].items():
        out.update({f"optim.{i}.{k}": torch.as_tensor(v) for k, v in st.items()})
    return out


def assert_same_training_state(a, b) -> None:
    """Two trainers hold bit-identical states, at the same step and learning rate."""
    sa, sb = training_state(a), training_state(b)
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    assert a.step == b.step
    assert [g["lr"] for g in a.opt.param_groups] == [g["lr"] for g in b.opt.param_groups]


# The browser test's outcome gets its own line in the summary (CI's output shows whether it ran or why not).
_BROWSER: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "browser" in report.keywords and (report.when == "call" or report.skipped):
        reason = f" ({report.longrepr[2]})" if report.skipped and isinstance(report.longrepr, tuple) else ""
        _BROWSER.append(f"{report.nodeid}: {report.outcome}{reason}")


def pytest_terminal_summary(terminalreporter) -> None:
    for line in _BROWSER:
        terminalreporter.write_line(f"headless browser: {line}")
