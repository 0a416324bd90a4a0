"""The config schema: one frozen, validated model per concept, and :func:`validate`, the one-line error.

Configs are validated where they enter (file, CLI flag, Python call) and every
run writes its resolved config beside its outputs. Unknown keys are errors, so
a typo in a YAML file never silently falls back to a default. The schema
knows no network: a backbone checks its own size when it is built
(:func:`ddsm.nn.backbone.build_backbone`).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import (BaseModel, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from ddsm.config.autoencoder import AutoencoderConfig
from ddsm.config.base import _Frozen, omit_unset
from ddsm.config.widths import DEFAULT_WIDTHS, WidthSet
from ddsm.errors import DDSMError
from ddsm.io import stable_hash
from ddsm.limits import MAX_IMAGE_SIDE, MAX_MESSAGE_CHARS, MAX_SEED, clip, short

#: largest number of training timesteps T (the noise schedule and per-step tables have T entries)
MAX_TIMESTEPS = 100_000


class UNetConfig(_Frozen):
    """Architecture of the slimmable UNet supernet (DDPM-style)."""

    image_size: int = Field(16, gt=0, le=MAX_IMAGE_SIDE)  # side of the square input, in pixels
    in_channels: int = Field(1, gt=0)  # 1 for grayscale, 3 for RGB
    base_channels: int = Field(32, gt=0)  # channels of the first level at width 1
    channel_mults: tuple[int, ...] = (1, 2, 2)  # per-level channel multiplier
    num_res_blocks: int = Field(1, gt=0)  # residual blocks per level (down path)
    attn_resolutions: tuple[int, ...] = (8,)  # feature-map sides that get self-attention
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # dropout inside residual blocks
    widths: WidthSet = DEFAULT_WIDTHS  # width multipliers the supernet serves
    group_channels: int = Field(4, gt=0)  # GroupNorm channels per group, fixed at every width
    down_block: str = "conv"  # name in ddsm.nn.unet.DOWN_BLOCKS
    up_block: str = "nearest_conv"  # name in ddsm.nn.unet.UP_BLOCKS
    num_classes: int = Field(0, ge=0, le=100_000)  # class labels of a conditional model (0: unconditional)

    OMIT_WHEN = {"num_classes": 0}  # unconditional: every supernet trained before the field keeps its fingerprint

    @field_validator("channel_mults")
    @classmethod
    def _mults(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(m <= 0 for m in v):
            raise ValueError(f"channel_mults must be positive integers, got {short(list(v))}")
        return v

    @model_validator(mode="after")
    def _shapes(self) -> "UNetConfig":
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % factor:
            valid = [self.image_size // factor * factor, (self.image_size // factor + 1) * factor]
            raise ValueError(
                f"image_size {self.image_size} cannot be downsampled {len(self.channel_mults) - 1} times "
                f"by 2; use a multiple of {factor} (e.g. {valid[0] or factor} or {valid[1]})"
            )
        sides = [self.image_size // 2**i for i in range(len(self.channel_mults))]
        for r in self.attn_resolutions:
            if r not in sides:
                raise ValueError(f"attn_resolutions entry {r} is not a feature-map side; valid: {sides}")
        for w in self.widths:
            for m in self.channel_mults:
                c = w * self.base_channels * m
                if abs(c - round(c)) > 1e-6 or round(c) % self.group_channels:
                    raise ValueError(
                        f"width {w} gives {c:g} channels at channel multiplier {m}, which GroupNorm with "
                        f"{self.group_channels} channels per group cannot normalise; every width times "
                        f"{self.base_channels}*mult must be a multiple of {self.group_channels}"
                    )
        return self

    def valid_resolutions(self) -> list[int]:
        """Sides a state can have: divisors of ``image_size`` the UNet can downsample."""
        factor = 2 ** (len(self.channel_mults) - 1)
        return [d for d in range(factor, self.image_size + 1, factor) if self.image_size % d == 0]

    def channels(self, level: int, width: float = 1.0) -> int:
        """Active channels of ``level`` at ``width``."""
        return int(round(width * self.base_channels * self.channel_mults[level]))


class DiTConfig(_Frozen):
    """Architecture of the slimmable diffusion transformer (DiT, Peebles & Xie 2023) supernet.

    A width keeps a prefix of the attention heads and of the MLP hidden units
    in every block (DyDiT's dimensions); the residual stream (``hidden_size``)
    keeps its size at every width.
    """

    image_size: int = Field(32, gt=0, le=MAX_IMAGE_SIDE)  # side of the square input, in pixels
    in_channels: int = Field(1, gt=0, le=64)  # image channels in, ε channels out
    patch_size: int = Field(4, gt=0, le=64)  # p: the image is cut into (image_size / p)^2 tokens of p x p pixels
    hidden_size: int = Field(128, gt=0, le=4096)  # d: the residual stream's width (kept at every width)
    depth: int = Field(6, gt=0, le=64)  # N: transformer blocks
    num_heads: int = Field(8, gt=0, le=64)  # attention heads at width 1 (each of hidden_size / num_heads channels)
    mlp_ratio: float = Field(4.0, gt=0.0, le=16.0)  # MLP hidden units at width 1 = mlp_ratio * hidden_size
    num_classes: int = Field(0, ge=0, le=100_000)  # class labels of a conditional model (0: unconditional)
    widths: WidthSet = DEFAULT_WIDTHS  # width multipliers the supernet serves

    @model_validator(mode="after")
    def _shapes(self) -> "DiTConfig":
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide image_size {self.image_size}; use a "
                             f"divisor such as {max(d for d in range(1, self.patch_size + 1) if self.image_size % d == 0)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of 4 (the 2-D sin-cos position "
                             "embedding splits it in four)")
        for w in self.widths:
            heads = w * self.num_heads
            if abs(heads - round(heads)) > 1e-6:
                raise ValueError(f"width {w} keeps {heads:g} of {self.num_heads} attention heads, which splits a "
                                 f"head; every width times num_heads must be a whole number")
        return self

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden units at width 1."""
        return int(round(self.mlp_ratio * self.hidden_size))

    def heads(self, width: float = 1.0) -> int:
        """Attention heads kept at ``width``."""
        return int(round(width * self.num_heads))

    def valid_resolutions(self) -> list[int]:
        """Sides a state can have: divisors of ``image_size`` that are multiples of the patch size."""
        p = self.patch_size
        return [d for d in range(p, self.image_size + 1, p) if self.image_size % d == 0]


class DiffusionConfig(_Frozen):
    """Variance-preserving forward process."""

    num_timesteps: int = Field(1000, gt=1, le=MAX_TIMESTEPS)  # T, the number of training timesteps
    beta_schedule: Literal["linear", "cosine"] = "cosine"  # how beta_t grows with t
    beta_start: float = Field(1e-4, gt=0.0, lt=1.0)  # linear schedule only
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)  # linear schedule only
    # what the denoiser outputs (ddsm.diffusion.prediction): the noise, v, or the clean sample; as diffusers names it
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    # the states are an autoencoder's latents (a latent pipeline), not images in [-1, 1]: no sampler clips the
    # clean-sample estimate, whatever its clip_sample says (diffusers' latent pipelines' schedulers do not clip)
    latent: bool = False

    OMIT_WHEN = {"prediction_type": "epsilon", "latent": False}  # every model before the choices: ε, pixel space


class StudentConfig(_Frozen):
    """A few-step student distilled from a teacher (SFDDM): student step k runs at teacher timestep ``phi[k]``.

    Its noisy input at step k is the teacher's at ``phi[k]`` for the same clean
    image and noise, so it samples with the teacher's noise schedule on the
    visited timesteps ``phi`` (descending), one denoiser call per step.
    ``guidance_scale`` set: a class-conditional teacher's guided transition was
    distilled (Meng et al. 2023), so the student's conditional output already
    is guided and it samples with one call per step, unguided.
    """

    teacher: str  # fingerprint of the teacher's model config
    phi: tuple[int, ...]  # teacher timesteps of student steps 0..K-1, strictly increasing, phi[0] = 0
    spacing: str = "custom"  # how phi was chosen: linspace, leading or custom
    guidance_scale: float | None = Field(None, ge=0.0, le=100.0, allow_inf_nan=False)  # CFG scale distilled in

    @field_validator("phi")
    @classmethod
    def _phi(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("a student needs at least one step (phi is empty)")
        if v[0] != 0 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"phi must start at 0 and increase strictly, got {short(list(v))}")
        return v

    @field_validator("guidance_scale")
    @classmethod
    def _guided(cls, v: float | None) -> float | None:
        if v == 1.0:
            raise ValueError("guidance_scale 1 guides nothing; leave it unset for a student of the conditional "
                             "transition")
        return v

    @property
    def steps(self) -> int:
        """K, the student's number of sampling steps."""
        return len(self.phi)


class DiffusersModelConfig(_Frozen):
    """A supernet made from a user's diffusers ``UNet2DModel`` or ``DiTTransformer2DModel`` (``ddsm slim``; see
    ``ddsm.nn.slimmed`` and ``ddsm.nn.slimmed_dit``).

    ``ModelConfig.unet`` (a UNet) or ``ModelConfig.dit`` (a DiT) then records only what the samplers, the cost model
    and the search read (image size, channels, widths, classes); the architecture is ``unet`` or ``transformer``.
    """

    unet: dict[str, Any] | None = None  # a UNet2DModel's config.json (private '_' keys dropped)
    transformer: dict[str, Any] | None = None  # a DiTTransformer2DModel's config.json (private '_' keys dropped)
    weights_sha256: str  # hash of the original weights file: the full width is exactly these weights
    freeze_full: bool = True  # width 1 runs the untouched original; only narrower widths were fine-tuned
    # a class-conditional UNet (num_class_embeds N): whether its last class embedding is the null (unconditional)
    # label, as in ddsm's own models (N - 1 classes, guidance and label dropout possible), or it has none (N classes)
    null_label: bool = False
    autoencoder: AutoencoderConfig | None = None  # a latent pipeline's VAE or VQ model; None: a pixel-space model

    OMIT_WHEN = {"null_label": False, "transformer": None, "unet": None, "autoencoder": None}

    @model_validator(mode="after")
    def _one_model(self) -> "DiffusersModelConfig":
        if (self.unet is None) == (self.transformer is None):
            raise ValueError("a diffusers model config holds one model: unet (UNet2DModel) or transformer "
                             "(DiTTransformer2DModel)")
        a, denoiser = self.autoencoder, self.unet or self.transformer
        if a is not None and (int(denoiser.get("in_channels", 3)) != a.latent_channels or
                              int(denoiser.get("sample_size", 32)) * a.downscale != a.image_size):
            raise ValueError(f"the denoiser takes {denoiser.get('in_channels')} channels at side "
                             f"{denoiser.get('sample_size')}; the {a.kind}'s latents have {a.latent_channels} at side "
                             f"{a.image_size // a.downscale}")
        n = (self.unet or {}).get("num_class_embeds")
        if self.null_label and not (isinstance(n, int) and n >= 2):
            raise ValueError(f"null_label needs a class-conditional UNet with at least 2 class embeddings "
                             f"(num_class_embeds {n!r})")
        return self

    @property
    def num_classes(self) -> int:
        """Class labels the model takes (0: unconditional); with ``null_label`` the last embedding is not one. A DiT
        takes ``num_embeds_ada_norm`` classes, its embedding table's extra last row being the null label."""
        if self.transformer is not None:
            return int(self.transformer["num_embeds_ada_norm"])
        n = self.unet.get("num_class_embeds") or 0
        return n - 1 if self.null_label else n

    @property
    def has_null_label(self) -> bool:
        """Whether label ``num_classes`` (unconditional) exists: guidance and label dropout need it. An
        unconditional model needs none; a DiT's class table has one; a UNet's only with ``null_label``."""
        return not self.num_classes or self.transformer is not None or self.null_label


class ModelConfig(_Frozen):
    """Everything that fixes what a checkpoint's weights mean."""

    unet: UNetConfig = UNetConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    student: StudentConfig | None = None  # set for a distilled few-step student (SFDDM)
    diffusers: DiffusersModelConfig | None = None  # set for a slimmed diffusers model (ddsm slim)
    dit: DiTConfig | None = None  # set for a diffusion transformer (backbone 'dit'); then unet is unused
    # A name in ddsm.nn.registry.BACKBONES (checked when the network is built); unset: the one the sections describe.
    backbone: str | None = Field(None, min_length=1, max_length=64)

    OMIT_WHEN = {"backbone": None, "dit": None}

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):
        # as every config's (the base's), and a transformer's config holds no unet section (it would only be the
        # unused default)
        data = omit_unset(handler(self), self.OMIT_WHEN)
        if isinstance(data, dict) and data.get("dit") is not None:
            data.pop("unet", None)
        return data

    @property
    def image_geometry(self) -> "UNetConfig | DiTConfig":
        """:attr:`geometry` as the samples are seen as images: a latent model's (a slimmed pipeline with an
        autoencoder) at the decoder's side and channels, the data it is trained and judged on; any other model's is
        its geometry."""
        a = self.diffusers.autoencoder if self.diffusers is not None else None
        if a is None:
            return self.geometry
        return self.geometry.model_copy(update={"image_size": a.image_size, "in_channels": a.image_channels})

    @property
    def geometry(self) -> "UNetConfig | DiTConfig":
        """The architecture section that says what images the network takes and which widths and sides it serves
        (``image_size``, ``in_channels``, ``widths``, ``valid_resolutions()``): ``dit`` for a transformer, else
        ``unet`` (for a slimmed diffusers model, its recorded surrogate)."""
        return self.dit if self.dit is not None else self.unet

    @model_validator(mode="after")
    def _sections(self) -> "ModelConfig":
        if self.diffusers is not None and (self.dit is not None) != (self.diffusers.transformer is not None):
            raise ValueError("a slimmed diffusers DiT records its geometry in a dit section, and only a DiT does "
                             "(a model config has a dit section or a diffusers UNet, not both)")
        if (self.backbone == "dit") != (self.dit is not None) and self.backbone is not None:
            raise ValueError("backbone 'dit' needs a dit section (and a dit section needs backbone 'dit' or none)"
                             if self.backbone == "dit" else f"a dit section is for backbone 'dit', not "
                             f"{short(self.backbone, 40)}")
        if self.dit is not None and "unet" in self.model_fields_set:
            raise ValueError("a dit model config takes no unet section; its architecture is the dit section")
        return self

    @model_validator(mode="after")
    def _student(self) -> "ModelConfig":
        if self.student is not None and self.student.phi[-1] > self.diffusion.num_timesteps - 1:
            raise ValueError(f"student phi reaches timestep {self.student.phi[-1]}, beyond the teacher's "
                             f"{self.diffusion.num_timesteps} training timesteps (0..{self.diffusion.num_timesteps - 1})")
        return self

    def fingerprint(self) -> str:
        """Hash of the architecture, width set and noise schedule (and, for a student, its teacher and steps)."""
        data = self.model_dump(mode="json")
        for key in ("student", "diffusers"):  # added later: older supernets keep the fingerprint they always had
            if data[key] is None:
                data.pop(key)
        if data.get("student") is not None and data["student"]["guidance_scale"] is None:
            data["student"].pop("guidance_scale")  # likewise: students distilled before guided distillation
        return stable_hash(data)


class DataConfig(_Frozen):
    """Where training images come from."""

    source: str = "digits"  # 'digits', 'mnist', a folder of images, or 'torchvision:NAME:ROOT'
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # share kept out of training
    split_seed: int = Field(0, ge=0, le=MAX_SEED)  # seed of the train/held-out split


class TrainConfig(_Frozen):
    """Supernet training recipe (sandwich rule with in-place distillation)."""

    iters: int = Field(6000, gt=0)  # optimizer steps in total
    batch_size: int = Field(64, gt=0)  # images per step (shared by every width)
    lr: float = Field(1e-3, gt=0.0)  # AdamW peak learning rate
    weight_decay: float = Field(0.0, ge=0.0)  # AdamW decoupled weight decay
    warmup: int = Field(200, ge=0)  # linear learning-rate warm-up, in steps
    lr_decay: Literal["constant", "cosine"] = "cosine"  # after warm-up
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)  # cosine floor as a share of lr
    grad_clip: float = Field(1.0, gt=0.0)  # global gradient-norm clip
    n_random_widths: int = Field(1, ge=0)  # random widths besides widest and narrowest
    distill_weight: float = Field(0.5, ge=0.0, le=1.0)  # share of the narrow loss that regresses the widest net
    # Spectrum-aware distillation (Spectral Diffusion); weight 0 leaves training exactly as without it.
    spectral_weight: float = Field(0.0, ge=0.0, allow_inf_nan=False)  # weight of the frequency term of narrow widths
    spectral_floor: float = Field(0.01, gt=0.0, le=1.0)  # |DFT| floor as a share of its largest value (bounds 1/|DFT|)
    spectral_gamma: float = Field(5.0, gt=0.0, allow_inf_nan=False)  # min-SNR clip of the clean-image term's time weight
    spectral_schedule: Literal["constant", "late_high"] = "constant"  # late_high: weights ** (1 - t/T)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)  # EMA decay after warm-up
    ema_warmup: bool = True  # decay = min(ema_decay, (1+n)/(10+n))
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA (fp16 where bf16 is not supported), off on CPU
    seed: int = Field(0, ge=0, le=MAX_SEED)  # every random draw of training comes from this
    checkpoint_every: int = Field(250, gt=0)  # steps between resumable checkpoints
    snapshot_every: int = Field(0, ge=0)  # steps between kept EMA snapshots (0: none)
    threads: int = Field(0, ge=0)  # torch CPU threads (0: torch's default)
    resolutions: tuple[int, ...] = ()  # lower sides the sandwich also trains at (Spectral Progressive Diffusion)
    full_resolution_share: float = Field(0.5, ge=0.0, le=1.0)  # with resolutions: share of steps at image_size
    init_from: str | None = None  # supernet to start from (fine-tuning): shipped name, run folder or file
    # classifier-free guidance: share of a conditional model's training labels replaced by the null label
    label_dropout: float = Field(0.1, ge=0.0, le=1.0)


class DistillConfig(_Frozen):
    """SFDDM: distil a teacher supernet into the K-step student of ``RunConfig.model`` (see ddsm.distill)."""

    teacher: str  # the teacher supernet: shipped name, run folder or file
    steps: int = Field(gt=0, le=MAX_TIMESTEPS)  # K, the student's sampling steps
    spacing: Literal["linspace", "leading"] = "linspace"  # how phi spreads over the teacher's timesteps
    sub_steps: int = Field(4, gt=0, le=1000)  # teacher DDIM steps per student step in the target
    hidden_weight: float = Field(1.0, ge=0.0, allow_inf_nan=False)  # weight of the hidden-map term


class SlimConfig(_Frozen):
    """Fine-tune a diffusers UNet2DModel's narrow widths by distillation from the frozen original (ddsm slim)."""

    source: str  # the model folder (config.json + safetensors weights) or a pipeline folder with unet/
    order: Literal["importance", "none"] = "none"  # "importance": permute channels by weight norm before fine-tuning
    criterion: Literal["weight_norm"] = "weight_norm"  # what "importance" means (ddsm.nn.channel_order)
    hidden_weight: float = Field(0.0, ge=0.0, allow_inf_nan=False)  # L1 of each width's last hidden map to the original's


#: train settings that only some kinds of run use: the key, and the kinds that take it (RunConfig.kind)
KIND_SPECIFIC_TRAIN_KEYS = {
    "resolutions": ("train",), "full_resolution_share": ("train",),  # the data's noise at lower sides
    "spectral_weight": ("train",), "spectral_floor": ("train",), "spectral_gamma": ("train",),
    "spectral_schedule": ("train",),  # against the in-place teacher, which only plain training has
    "distill_weight": ("train", "slim"),  # a distillation regresses its teacher's transition alone
}


class RunConfig(_Frozen):
    """The resolved configuration of one training run, written to its folder."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig | None = None  # set for an SFDDM distillation run (ddsm distill)
    slim: SlimConfig | None = None  # set for a fine-tune of a diffusers model's narrow widths (ddsm slim)

    @model_validator(mode="after")
    def _slim(self) -> "RunConfig":
        if (self.slim is None) != (self.model.diffusers is None):
            raise ValueError("a slim run needs both slim and model.diffusers (ddsm slim sets them); a training run "
                             "neither")
        if self.slim is not None and self.distill is not None:
            raise ValueError("a slim run cannot also be a distillation; distil the slimmed supernet afterwards")
        return self

    @model_validator(mode="after")
    def _distill(self) -> "RunConfig":
        student, distill = self.model.student, self.distill
        if (student is None) != (distill is None):
            raise ValueError("a distillation run needs both distill and model.student (ddsm distill sets them); "
                             "a training run neither")
        if distill is not None and student.steps != distill.steps:
            raise ValueError(f"model.student has {student.steps} steps but distill.steps is {distill.steps}")
        return self

    @property
    def kind(self) -> str:
        """``distill`` (an SFDDM distillation), ``slim`` (a diffusers model's narrow widths) or ``train``."""
        return "distill" if self.distill is not None else "slim" if self.slim is not None else "train"

    @model_validator(mode="after")
    def _applies(self) -> "RunConfig":
        # A setting its run kind ignores is refused rather than silently dropped; its default is the same as unset.
        for key, kinds in KIND_SPECIFIC_TRAIN_KEYS.items():
            if self.kind not in kinds and getattr(self.train, key) != TrainConfig.model_fields[key].default:
                raise ValueError(f"train.{key} applies to {' and '.join(kinds)} runs only, not to this {self.kind} "
                                 "run; remove it")
        d = self.model.diffusers
        if d is not None and not d.has_null_label and self.train.label_dropout > 0:
            raise ValueError(f"train.label_dropout {self.train.label_dropout:g} needs a null label, which this "
                             "slimmed model has not; set it to 0, or slim with --null-label last if the model's last "
                             "class embedding is one")
        if not self.model.geometry.num_classes and \
                self.train.label_dropout != TrainConfig.model_fields["label_dropout"].default:
            raise ValueError("train.label_dropout applies to class-conditional models (num_classes > 0) only; "
                             "remove it, or set the model's num_classes")
        return self

    @model_validator(mode="after")
    def _resolutions(self) -> "RunConfig":
        unet = self.model.geometry
        valid = unet.valid_resolutions()
        for r in self.train.resolutions:
            if r not in valid:
                why = "does not divide" if r <= 0 or unet.image_size % r else "cannot be downsampled for"
                raise ValueError(f"train.resolutions entry {r} {why} the image size {unet.image_size}; valid: {valid}")
        return self


C = TypeVar("C", bound=BaseModel)


def validate(cls: type[C], data: Any, source: str = "config") -> C:
    """Validate ``data`` into ``cls``; raise a one-line DDSMError naming the first bad field.

    Quoted inputs and the whole message are cut to a sane length (:mod:`ddsm.limits`).
    """
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = clip(".".join(str(x) for x in err["loc"]) or "(root)", 80)
        msg = clip(str(err["msg"]).removeprefix("Value error, "), 200)
        got = err.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {short(got)})"
        extra = f"; {e.error_count() - 1} more error(s)" if e.error_count() > 1 else ""
        raise DDSMError(clip(f"{source}: {loc}: {msg}{shown}{extra}", MAX_MESSAGE_CHARS)) from None
