"""What a denoiser's output means, and converting it: ε, v or the clean sample.

Every sampler and evaluator works with the pair (ε, x0) at the state's noise
level ᾱ; :func:`eps_and_x0` gets it from any model output, and
:func:`model_target` gives the output a model of each kind must learn for a
known (ε, x0). With ``x = √ᾱ x0 + √(1-ᾱ) ε``:

- ``epsilon``: the noise; x0 = (x - √(1-ᾱ) ε) / √ᾱ multiplies an error in ε
  by √((1-ᾱ)/ᾱ), without bound as ᾱ → 0 (the noisiest steps).
- ``v_prediction``: v = √ᾱ ε - √(1-ᾱ) x0 (Salimans & Ho, 2022, appendix D);
  ε = √ᾱ v + √(1-ᾱ) x and x0 = √ᾱ x - √(1-ᾱ) v are rotations of (v, x), so
  an error in v never grows by more than 1 in either.
- ``sample``: x0 itself; ε = (x - √ᾱ x0) / √(1-ᾱ) is ill-conditioned as ᾱ → 1.

The names and formulas are diffusers' ``prediction_type`` (its DDIM and DDPM
schedulers convert the same way), so a model keeps its meaning across the bridge.
"""

from __future__ import annotations

from typing import Literal

import torch

PredictionType = Literal["epsilon", "v_prediction", "sample"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def eps_and_x0(output: torch.Tensor, x: torch.Tensor, ab: torch.Tensor, kind: str = "epsilon"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε, x0) from a model's ``output`` for state ``x`` at noise level ``ab`` (ᾱ, broadcastable)."""
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if kind == "epsilon":
        return output, (x - s * output) / a
    if kind == "v_prediction":
        return a * output + s * x, a * x - s * output
    if kind == "sample":
        return (x - a * output) / s, output
    raise ValueError(f"prediction type {kind!r} is not one of {', '.join(PREDICTION_TYPES)}")


def model_target(eps: torch.Tensor, x0: torch.Tensor, ab: torch.Tensor, kind: str = "epsilon") -> torch.Tensor:
    """The output a model of prediction type ``kind`` should give for noise ``eps`` and clean ``x0`` at ``ab``."""
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0
    if kind == "sample":
        return x0
    raise ValueError(f"prediction type {kind!r} is not one of {', '.join(PREDICTION_TYPES)}")

