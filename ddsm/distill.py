"""Single-fold distillation of a few-step slimmable student (SFDDM, Hong et al. 2024).

A teacher supernet trained on T timesteps becomes a student of any K steps in
one fold. Student step k runs at teacher timestep ``phi[k]`` (``phi[0] = 0``,
increasing; :func:`student_phi`), and its noisy input is the teacher's at
``phi[k]`` for the same clean image and noise: ``x'_k = x_{phi_k}``. So the
student needs no noise schedule of its own; it samples on the visited
timesteps ``phi`` (descending) with the teacher's alpha_bar, one denoiser call
per step (:func:`student_sampler`).

Training, per batch (every draw from the run's seeded generator):

1. ``x0``, a student step ``k`` per image (uniform over 0..K-1) and noise ``eps``
   give ``x_{phi_k}``.
2. The target (:func:`teacher_target`) is the teacher's multi-step transition
   from ``phi_k`` to ``phi_{k-1}``. The frozen teacher runs at full width,
   with ``sub_steps`` deterministic DDIM steps on evenly spaced (fractional)
   timesteps, and the target is the output with which *one* DDIM step of the
   student lands where the teacher did. At ``k = 0`` there is nothing between
   ``phi_0 = 0`` and the clean image, and the target is the teacher's own.
   A student predicts v by default (``diffusion.prediction_type``, recorded in
   its checkpoint): its target comes from the jump's clean-image estimate
   (:func:`x0_for_jump`), well-conditioned where the first step starts at
   ᾱ ≈ 0, and the teacher's sub-steps clip their clean-image estimate as its
   sampler does. An ε student (``--prediction epsilon``, every student made
   before) regresses :func:`eps_for_jump` of the unclipped landing, as before:
   near ᾱ = 0 that target multiplies the teacher's error by ``1/sqrt(ᾱ)``.
3. Output term: the squared error of the output (ε, or v: for v it is the
   clean-image error weighted by 1 + SNR, Salimans & Ho 2022).
4. Hidden-variable term, weight ``hidden_weight``: the mean absolute
   difference of the last hidden feature map (before the output convolution)
   between the student and the teacher at the same input. A narrow student is
   compared with the first channels of the teacher's map, the channels its
   slice keeps. This is the matching that the authors' published code applies.
   That code's output term differs: an L1 to the teacher's single output at
   ``x_{phi_k}``, which a perfect student turns into the teacher's own K-step
   DDIM; ``sub_steps = 1`` gives it (for an ε student, to float rounding).
   The paper's abstract speaks of the "distribution of the hidden variables",
   and its method section was not available to check whether it states a
   divergence instead.
5. The sandwich rule over the student's widths: the widest, the narrowest
   and ``n_random_widths`` random ones each regress the same full-width
   teacher target. Gradients accumulate before one AdamW step.

A class-conditional teacher (a v student only): each image's label, dropped to the
null label at ``train.label_dropout``, goes to the teacher's sub-steps and to the
student, so the student learns the teacher's conditional and unconditional
transitions and samples with classifier-free guidance as the teacher does
(guidance then combines the student's two outputs at each of its K steps).
With ``--guidance-scale S`` (``StudentConfig.guidance_scale``) the teacher's
sub-steps follow its *guided* ε at scale S instead, as Meng et al. (2023, "On
distillation of guided diffusion models") distil the guided model: the student's
conditional output then is the guided transition, and it samples unguided, one
call per step instead of two (:func:`student_sampler`). Its hidden map is
compared with the teacher's conditional one.

The student starts from the teacher's weights: an ε student is, before any
training, the teacher's own K-step DDIM; a v student keeps the teacher's
features but must first learn to read its output as v. :class:`TeacherTransition` is this run kind's
target; the step, checkpoints, EMA, resume (bit-exact) and progress are
:class:`ddsm.train.Trainer`'s, the hidden-map term is
:class:`ddsm.loss_terms.HiddenTerm` (logged as ``hidden@w`` beside ``loss@w``,
the output term).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ddsm.checkpoint import load_supernet
from ddsm.config import ModelConfig, RunConfig, StudentConfig, validate
from ddsm.diffusion.losses import eps_loss
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.diffusion.prediction import eps_and_x0, model_target
from ddsm.errors import DDSMError
from ddsm.samplers.base import SamplerConfig, spaced_timesteps
from ddsm.samplers.loop import guided_eps
from ddsm.targets import Batch, draw_clean_and_noise

if TYPE_CHECKING:  # annotations only: the trainer imports this module
    from ddsm.train import Trainer

#: how a student's teacher timesteps may be spread
PHI_SPACINGS = ("linspace", "leading")
#: what a student may predict (ddsm.diffusion.prediction); new students default to v
STUDENT_PREDICTIONS = ("v_prediction", "epsilon")


def student_phi(num_timesteps: int, steps: int, spacing: str = "linspace") -> tuple[int, ...]:
    """``phi``: the teacher timestep of each student step, increasing, ``phi[0] = 0``.

    ``linspace`` spreads K steps over 0..T-1, so the first sampling step sees
    (nearly) pure noise at T-1. ``leading`` is the paper's uniform subsequence
    ``phi_k = k * (T // K)``. One step (K = 1) is ``(0,)`` under either.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 < steps <= num_timesteps:
        raise DDSMError(f"--steps {steps!r} is not a number of student steps in 1..{num_timesteps} "
                        f"(the teacher's training timesteps)")
    if spacing not in PHI_SPACINGS:
        raise DDSMError(f"phi spacing {spacing!r} is not one of {', '.join(PHI_SPACINGS)}")
    ts = spaced_timesteps(num_timesteps, steps, spacing).flip(0)
    return tuple(int(t) for t in ts)


def student_sampler(student: StudentConfig, kind: str = "ddim", **options) -> SamplerConfig:
    """The student's own K-step sampler: the teacher timesteps ``phi``, visited from the noisiest.

    A student with guidance distilled in samples unguided: a ``guidance_scale`` option must be unset or the
    distilled scale (either gives no guidance at sampling, the conditional output alone); another is refused.
    (Search spaces are checked before they get here: ``prepare_search`` and ``prepare_joint`` name their setting.)"""
    scale = student.guidance_scale
    if scale is not None:
        asked = options.pop("guidance_scale", None)
        if asked is not None and asked != scale:
            raise DDSMError(f"--guidance-scale {asked:g} cannot apply to this student: guidance scale {scale:g} is "
                            f"distilled into its output; drop the flag (or give {scale:g}), it samples unguided")
    return validate(SamplerConfig, {"kind": kind, "steps": student.steps,
                                    "timesteps": tuple(float(t) for t in reversed(student.phi)), **options},
                    source="sampler flags")


def x0_for_jump(x_t: torch.Tensor, x_s: torch.Tensor, ab_t: torch.Tensor, ab_s: torch.Tensor) -> torch.Tensor:
    """The clean-image estimate with which one DDIM step from ``x_t`` (``ab_t``) lands exactly on ``x_s`` (``ab_s``).

    DDIM's step is linear in x0 too, ``x_s = r x_t + (sqrt(ab_s) - r sqrt(ab_t)) x0`` with
    ``r = sqrt((1-ab_s)/(1-ab_t))``, and the bracket stays near ``sqrt(ab_s)`` as ``ab_t`` goes to 0: unlike
    :func:`eps_for_jump`'s, it does not blow up where the student's first, noisiest step starts
    (Salimans & Ho 2022, eq. 9's x-target of progressive distillation).
    """
    r = ((1 - ab_s) / (1 - ab_t)).sqrt()
    return (x_s - r * x_t) / (ab_s.sqrt() - r * ab_t.sqrt())


def _ddim_move(x: torch.Tensor, eps: torch.Tensor, ab_t: torch.Tensor, ab_s: torch.Tensor,
               clip: bool = False) -> torch.Tensor:
    # One deterministic DDIM step from noise level ab_t to ab_s (per-sample (B, 1, 1, 1)); with ``clip`` x0 is
    # clamped to [-1, 1] as ddsm's and diffusers' samplers do by default (clip_sample), ε kept as it is.
    x0 = (x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    if clip:
        x0 = x0.clamp(-1, 1)
    return ab_s.sqrt() * x0 + (1 - ab_s).sqrt() * eps


def eps_for_jump(x_t: torch.Tensor, x_s: torch.Tensor, ab_t: torch.Tensor, ab_s: torch.Tensor) -> torch.Tensor:
    """The ε with which one DDIM step from ``x_t`` (noise level ``ab_t``) lands exactly on ``x_s`` (``ab_s``).

    DDIM's step is linear in ε, ``x_s = sqrt(ab_s/ab_t) x_t + (sqrt(1-ab_s) - sqrt(ab_s (1-ab_t)/ab_t)) ε``,
    and the bracket is non-zero whenever ``ab_s > ab_t`` (the step removes noise).
    """
    ratio = (ab_s / ab_t).sqrt()
    return (x_s - ratio * x_t) / ((1 - ab_s).sqrt() - ratio * (1 - ab_t).sqrt())


@torch.no_grad()
def teacher_target(teacher, schedule: NoiseSchedule, x: torch.Tensor, k: torch.Tensor, phi: torch.Tensor,
                   sub_steps: int, prediction: str = "epsilon", cond: torch.Tensor | None = None,
                   guidance_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the student's target, the teacher's hidden map at the student's input) for states ``x = x_{phi_k}``.

    ``teacher`` is a supernet at full width (the caller's setting is kept),
    ``k`` (B,) the student steps and ``phi`` the (K,) teacher timesteps. The
    target is the output of a student of ``prediction`` type (ε or v) whose one
    DDIM step lands where the teacher's sub-steps did. For v it is built from
    the well-conditioned :func:`x0_for_jump`, in float64. ``cond`` (B,) are a
    class-conditional teacher's labels (the null label: its unconditional
    transition), the same at every sub-step; ``guidance_scale`` guides every teacher call at that scale (the
    hidden map stays the conditional call's).
    """
    t = phi[k].double()
    eps, hidden = teacher(x, t.to(x.device).float(), return_hidden=True, **_labels(cond))
    if guidance_scale is not None:
        if cond is None:
            raise DDSMError("guided distillation needs a class-conditional teacher and labels")
        eps_u = teacher(x, t.to(x.device).float(), cond=torch.full_like(cond, teacher.num_classes))
        eps = eps_u + guidance_scale * (eps - eps_u)
    if prediction != "epsilon":
        return _target_from_x0(teacher, schedule, x, k, phi, sub_steps, eps, prediction, cond, guidance_scale), hidden
    if cond is not None:
        raise DDSMError("an ε student of a class-conditional teacher is not supported; distil a v student")
    target = eps.clone()
    jump = k > 0
    if jump.any():
        xs, ts, te = x[jump], t[jump], phi[k[jump] - 1].double()
        e = eps[jump]
        shape = (-1, *([1] * (x.ndim - 1)))
        ab_start = schedule.alpha_bar_at(ts).to(x.device, x.dtype).reshape(shape)
        for i in range(sub_steps):
            a = ts + (te - ts) * (i / sub_steps)
            b = ts + (te - ts) * ((i + 1) / sub_steps)
            ab_a = schedule.alpha_bar_at(a).to(x.device, x.dtype).reshape(shape)
            ab_b = schedule.alpha_bar_at(b).to(x.device, x.dtype).reshape(shape)
            if i > 0:
                e = teacher(xs, a.to(x.device).float())
            xs = _ddim_move(xs, e, ab_a, ab_b)
        ab_end = schedule.alpha_bar_at(te).to(x.device, x.dtype).reshape(shape)
        target[jump] = eps_for_jump(x[jump], xs, ab_start, ab_end)
    return target, hidden


def _labels(cond: torch.Tensor | None) -> dict:
    return {} if cond is None else {"cond": cond}  # an unconditional teacher: the call it always was


def _teacher_landing(teacher, schedule: NoiseSchedule, x: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor,
                     te: torch.Tensor, sub_steps: int, cond: torch.Tensor | None = None,
                     guidance_scale: float | None = None) -> torch.Tensor:
    """Where ``sub_steps`` deterministic DDIM steps of the teacher take ``x`` from ``ts`` to ``te`` (float64);
    ``eps`` is the teacher's prediction at ``ts``, already made.

    The teacher steps as its sampler does, clipping its clean-image estimate: near ᾱ = 0 the unclipped
    ``(x - sqrt(1-ᾱ) ε) / sqrt(ᾱ)`` multiplies the teacher's own ε error without bound, and a student trained on
    that landing learns the amplified error (the unclipped ε target keeps it, for the students made before)."""
    shape = (-1, *([1] * (x.ndim - 1)))
    xs, e = x.double(), eps.double()
    for i in range(sub_steps):
        a = ts + (te - ts) * (i / sub_steps)
        b = ts + (te - ts) * ((i + 1) / sub_steps)
        if i > 0:
            e = guided_eps(teacher, xs.to(x.dtype), a.to(x.device).float(), cond, guidance_scale).double()
        xs = _ddim_move(xs, e, schedule.alpha_bar_at(a).to(x.device).reshape(shape),
                        schedule.alpha_bar_at(b).to(x.device).reshape(shape), clip=True)
    return xs


def _target_from_x0(teacher, schedule: NoiseSchedule, x: torch.Tensor, k: torch.Tensor, phi: torch.Tensor,
                    sub_steps: int, eps: torch.Tensor, prediction: str, cond: torch.Tensor | None = None,
                    guidance_scale: float | None = None) -> torch.Tensor:
    """The student's output target of ``prediction`` type from the jump's clean-image estimate x0*: at k = 0 the
    teacher's own (the step ends at the clean image), else :func:`x0_for_jump` of the teacher's landing."""
    shape = (-1, *([1] * (x.ndim - 1)))
    t = phi[k].double()
    ab = schedule.alpha_bar_at(t).to(x.device).reshape(shape)
    xd = x.double()
    eps_star, x0_star = eps_and_x0(eps.double(), xd, ab)  # k = 0: the teacher's own estimates
    jump = k > 0
    if jump.any():
        te = phi[k[jump] - 1].double()
        xs = _teacher_landing(teacher, schedule, x[jump], eps[jump], t[jump], te, sub_steps,
                              None if cond is None else cond[jump], guidance_scale)
        ab_s = schedule.alpha_bar_at(te).to(x.device).reshape(shape)
        x0_j = x0_for_jump(xd[jump], xs, ab[jump], ab_s)
        x0_star[jump] = x0_j
        eps_star[jump] = (xd[jump] - ab[jump].sqrt() * x0_j) / (1 - ab[jump]).sqrt()
    return model_target(eps_star, x0_star, ab, prediction).to(x.dtype)


def student_config(teacher: ModelConfig, steps: int, spacing: str = "linspace",
                   phi: tuple[int, ...] | None = None, prediction: str = "v_prediction",
                   guidance_scale: float | None = None) -> ModelConfig:
    """The teacher's model config with the student's steps and prediction type (``diffusion.prediction_type``:
    v, well-conditioned at every step, or ε as the teacher); the student's fingerprint names its teacher.
    ``guidance_scale``: distil a class-conditional teacher's guided transition at that scale (a v student)."""
    if prediction not in STUDENT_PREDICTIONS:
        raise DDSMError(f"--prediction {prediction!r} is not a prediction type a student can take; use one of "
                        f"{', '.join(STUDENT_PREDICTIONS)} (x0-prediction turns ill-conditioned at the clean end, "
                        "where ε = (x - sqrt(ab) x0) / sqrt(1 - ab))")
    if teacher.diffusion.prediction_type != "epsilon":
        raise DDSMError(f"the teacher predicts {teacher.diffusion.prediction_type}; ddsm distill takes an "
                        "ε-predicting teacher")
    if teacher.student is not None:
        raise DDSMError("the teacher is itself a distilled student; distil from the model it was distilled from")
    if guidance_scale is not None:
        if not teacher.geometry.num_classes:
            raise DDSMError(f"--guidance-scale {guidance_scale:g} needs a class-conditional teacher; this one is "
                            "unconditional (num_classes 0)")
        if prediction != "v_prediction":
            raise DDSMError(f"--guidance-scale {guidance_scale:g} needs a v student (--prediction v_prediction), "
                            f"not {prediction}")
    label = spacing if phi is None else "custom"
    if phi is None:
        phi = student_phi(teacher.diffusion.num_timesteps, steps, spacing)
    elif len(phi) != steps:
        raise DDSMError(f"phi has {len(phi)} timesteps for {steps} student steps")
    student = validate(StudentConfig, {"teacher": teacher.fingerprint(), "phi": list(phi), "spacing": label,
                                       **({"guidance_scale": guidance_scale} if guidance_scale is not None else {})},
                       source="--guidance-scale" if guidance_scale is not None else "student")
    doc = teacher.model_dump(mode="json")
    doc["diffusion"] = {**doc["diffusion"], "prediction_type": prediction}
    return validate(ModelConfig, {**doc, "student": student.model_dump(mode="json")}, source="student")


class TeacherTransition:
    """The distillation target: ``config.distill.teacher``'s multi-step transition (see the module docstring)."""

    def __init__(self, config: RunConfig) -> None:
        if config.distill is None or config.model.student is None:
            raise DDSMError("a distillation run needs a distill section and a student model config")
        self.config = config
        self.phi = torch.tensor(config.model.student.phi, dtype=torch.long)

    def prepare(self) -> None:
        dist = self.config.distill
        self.teacher_net = load_supernet(dist.teacher, device="cpu")
        if self.teacher_net.fingerprint != self.config.model.student.teacher:
            raise DDSMError(f"teacher {dist.teacher!r} has fingerprint {self.teacher_net.fingerprint}, but "
                            f"this student was distilled from {self.config.model.student.teacher}")
        if self.teacher_net.model.num_classes and self.config.model.diffusion.prediction_type == "epsilon":
            raise DDSMError(f"teacher {dist.teacher!r} is class-conditional (num_classes "
                            f"{self.teacher_net.model.num_classes}); distil a v student of it (--prediction "
                            "v_prediction), not an ε one")

    def attach(self, trainer: "Trainer") -> None:
        self.teacher = self.teacher_net.model.to(trainer.device).eval().requires_grad_(False)
        self.teacher.set_active_width(max(self.teacher.widths))
        if self.config.train.init_from is None:
            # The teacher's weights to start (a resume then loads its checkpoint): an ε student is then the
            # teacher's own K-step DDIM, a v student keeps its features.
            trainer.model.load_state_dict(self.teacher.state_dict())

    def inputs(self) -> dict[str, str]:
        return {"teacher": self.teacher_net.weights_sha256}

    def widths(self) -> tuple[float, ...]:
        return self.config.model.geometry.widths

    def draw(self, trainer: "Trainer") -> Batch:
        # a conditional teacher: a label per image, dropped to the null label at train.label_dropout, so the student
        # learns the teacher's conditional and unconditional transitions and samples with guidance as the teacher does
        x0, k, eps, cond = draw_clean_and_noise(trainer,
                                                lambda n, gen: torch.randint(len(self.phi), (n,), generator=gen))
        t = self.phi[k]
        x_t = trainer.schedule.q_sample(x0, t, eps)  # x'_k = x_{phi_k}: the teacher's state for the same x0, eps
        target, hidden = teacher_target(self.teacher, trainer.schedule, x_t, k, self.phi, self.config.distill.sub_steps,
                                        self.config.model.diffusion.prediction_type, cond,
                                        self.config.model.student.guidance_scale)
        return Batch(x_t=x_t, t=t.to(trainer.device).float(), eps=eps, reference=target, reference_hidden=hidden,
                     cond=cond)

    def eps_term(self, pred: torch.Tensor, batch: Batch, widest: torch.Tensor | None) -> torch.Tensor:
        # every width regresses the full-width teacher's transition; for a v student the squared error in v is
        # (1 + SNR) times the squared error of its clean-image estimate (Salimans & Ho's "SNR+1" weighting)
        return eps_loss(pred, batch.reference)
