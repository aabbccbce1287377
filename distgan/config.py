"""Typed experiment config: YAML file + dotted command-line overrides, validated up front.

A config is plain data (nested dataclasses). Every key is checked (unknown key, wrong type, impossible
value) before any process group, download or model is created, and each problem is one line naming the
key and the file it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distgan.errors import ConfigError

if typing.TYPE_CHECKING:
    from distgan.metrics.settings import EvalSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

# Upper bounds far beyond any sensible run, so that a typo fails here rather than as an allocation or overflow later.
MAX_INT = 2**63 - 1  # any integer key: what torch and numpy hold (int64)
MAX_IMAGE_SIZE = 1024  # data.image_size; data.load_size may be up to twice that
MAX_BATCH_SIZE = 65536  # train.batch_size, per process
MAX_NUM_WORKERS = 64  # data.num_workers, per process
MAX_NUM_SAMPLES = 1024  # log.num_samples: one grid, generated in one forward pass
MAX_NUM_CLASSES = 100_000  # data.num_classes
MAX_SHUFFLE_BUFFER = 1_000_000  # data.shuffle_buffer: decoded examples held in memory per process
MAX_TIMEOUT_S = 7 * 24 * 3600  # train.collective_timeout_s
MAX_PARAMS = 10**10  # G + D: fp32 weights, grads and Adam state are 160 GB per process, more than any device holds
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a top-level `name:`: one plain path component


def require_in_range(obj: Any, section: str, key: str, low: float, high: float, note: str = "") -> None:
    """`section.key` must lie in [low, high]; `note` says what the bound is for."""
    value = getattr(obj, key)
    if not low <= value <= high:
        raise ConfigError(f"{section}.{key}: must be in [{low}, {high}]{note}, got {value}")


def require_at_least_one(obj: Any, section: str, keys: tuple[str, ...]) -> None:
    """Each of `section.key` must be >= 1 (counts, widths, intervals)."""
    for key in keys:
        if getattr(obj, key) < 1:
            raise ConfigError(f"{section}.{key}: must be >= 1, got {getattr(obj, key)}")


def require_power_of_two_size(data: DataConfig, family: str, why: str = "") -> None:
    """data.image_size must be a power of two >= 16 (convolutional stacks halve it down to 4x4 or 1x1)."""
    size = data.image_size
    if size < 16 or size & (size - 1):
        raise ConfigError(f"data.image_size: {family} needs a power of two >= 16{why}, got {size}")


@dataclass
class DataConfig:
    """Where images come from and how they are shaped."""

    path: str = ""  # hub id, or a local parquet file/folder, imagefolder or folder of images
    split: str = "train"
    image_size: int = 64
    channels: Literal[1, 3] = 3
    image_column: str = "image"
    label_column: str = "label"
    num_classes: int | None = None  # None: read from the dataset's ClassLabel feature when a family needs it
    source_column: str | None = None  # image-to-image: A's column beside image_column (B); null: A|B in image_column
    direction: Literal["AtoB", "BtoA"] = "AtoB"  # image-to-image: which of A, B is the source
    load_size: int | None = None  # resize to this, then random-crop image_size (pix2pix: 286); null: center crop
    random_flip: bool = False  # horizontal flip with p=0.5 (the same flip for both images of a pair)
    shuffle_buffer: int = 1000  # 0 disables shuffling
    num_workers: int = 2
    cache_mb: int = 1024  # decode a split up to this size once and keep it in memory (random crop/flip: never); 0: off

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("data.path: is empty; set it to a hub dataset id or a local folder/parquet file")
        require_in_range(self, "data", "image_size", 4, MAX_IMAGE_SIZE)
        if self.num_classes is not None:
            require_in_range(self, "data", "num_classes", 1, MAX_NUM_CLASSES)
        if self.load_size is not None:
            require_in_range(self, "data", "load_size", self.image_size, 2 * MAX_IMAGE_SIZE, " (>= data.image_size)")
        require_in_range(self, "data", "shuffle_buffer", 0, MAX_SHUFFLE_BUFFER, " (0: no shuffling)")
        require_in_range(self, "data", "num_workers", 0, MAX_NUM_WORKERS)
        require_in_range(self, "data", "cache_mb", 0, 2**20, " (MB per process; 0: stream every epoch)")


@dataclass
class TrainConfig:
    """Optimisation: batch per process, step budget, precision, optimiser."""

    batch_size: int = 64  # per process
    max_steps: int = 1000
    max_seconds: float | None = None  # wall-clock budget: stop cleanly, checkpoint and export when spent
    seed: int = 0
    grad_accum: int = 1  # micro-batches per optimiser step, for both phases
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None  # None: take `accelerate launch`'s setting
    sync_bn: bool = False  # SyncBatchNorm across ranks (GPU only)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    max_nonfinite: int = 20  # steps in a row with non-finite loss/gradients (each skipped) before the run stops
    control_every: int = 10  # steps between the collective check of time budget, stop signals, non-finite steps
    collective_timeout_s: float = 600.0  # a process waiting longer than this for another one fails
    ema_kimg: float = 10.0  # half-life of G's exponential moving average in thousands of images; 0: no EMA
    ema_rampup: float | None = 0.05  # early on the half-life is at most images_seen x this (StyleGAN2); null: off
    d_steps: int = 1  # D updates per G update (WGAN-GP's n_critic: 5), each on its own batch
    lazy_correction: bool | None = None  # lr x k/(k+1), betas^(k/(k+1)) for lazily regularised nets; null: family's
    spectral_norm: Literal["none", "D", "G", "both"] | None = None  # null: the family's default (sngan: D)
    channels_last: bool | None = None  # NHWC weights and images (faster convolutions); null: the family's choice
    compile: Literal[False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = False

    def validate(self) -> None:
        require_at_least_one(self, "train", ("max_steps", "grad_accum", "max_nonfinite", "control_every", "d_steps"))
        require_in_range(self, "train", "d_steps", 1, 100)
        require_in_range(self, "train", "batch_size", 1, MAX_BATCH_SIZE, " (per process)")
        require_in_range(self, "train", "seed", 0, 2**32 - 1)  # what numpy's and torch's seeding accept
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"train.max_seconds: must be > 0 (or null for no limit), got {self.max_seconds}")
        for key in ("lr_g", "lr_d"):
            if not 0 < getattr(self, key) <= 1:
                raise ConfigError(f"train.{key}: must be in (0, 1], got {getattr(self, key)}")
        require_in_range(self, "train", "collective_timeout_s", 1, MAX_TIMEOUT_S, " seconds")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas: each must be in [0, 1), got {list(self.betas)}")
        require_in_range(self, "train", "ema_kimg", 0, 1e6)
        if self.ema_rampup is not None:
            require_in_range(self, "train", "ema_rampup", 1e-6, 1, " (or null for no ramp-up)")


@dataclass
class LossConfig:
    """The adversarial loss and D's penalties (docs/recipes.md)."""

    adversarial: str | None = None  # bce, hinge, wgan, lsgan; null: the family's default (sngan: hinge, else bce)
    r1_gamma: float = 0.0  # R1 penalty weight on real images; 0: off
    r1_every: int = 1  # lazy R1 (StyleGAN2): on every k-th D step, scaled by k
    gp_lambda: float = 0.0  # WGAN-GP penalty weight on real/fake interpolates; 0: off

    def validate(self) -> None:
        from distgan.losses.adversarial import get_adversarial

        if self.adversarial is not None:
            get_adversarial(self.adversarial)
        require_in_range(self, "loss", "r1_gamma", 0, 1e6, " (0: off)")
        require_in_range(self, "loss", "gp_lambda", 0, 1e6, " (0: off)")
        require_in_range(self, "loss", "r1_every", 1, 10_000)


@dataclass
class AugmentConfig:
    """Augmentation of every image D sees (real and generated, both phases)."""

    diffaugment: str = ""  # "" or a comma-separated policy: color, translation, cutout (Zhao et al. 2020)
    ada: bool = False  # adaptive discriminator augmentation (Karras et al. 2020): p tuned from D's outputs
    ada_pipeline: str = "bgc"  # ADA's groups: b (pixel blitting), g (geometric), c (color)
    ada_p: float = 0.0  # the starting probability (the fixed one with ada_fixed)
    ada_target: float = 0.6  # the r_t = E[sign(D(real))] that p is tuned towards
    ada_interval: int = 4  # steps between p updates
    ada_kimg: float = 500.0  # thousands of images for p to go from 0 to 1
    ada_fixed: bool = False  # keep p at ada_p (r_t is still logged)

    def validate(self) -> None:
        from distgan.augment import parse_policy
        from distgan.augment.ada import AdaController

        parse_policy(self.diffaugment)
        if self.ada:
            if self.diffaugment:
                raise ConfigError("augment.ada and augment.diffaugment: both augment D's inputs; keep one of them")
            AdaController.from_config(self, "cpu")  # every ada_* key checked, naming it


@dataclass
class LogConfig:
    """What is logged, where, and how often."""

    every: int = 50  # steps between scalar logs
    sample_every: int = 500  # steps between sample grids (a grid is always written at the end)
    num_samples: int = 64
    wandb: Literal["auto", "online", "offline", "off"] = "auto"  # auto: online if logged in, else offline
    project: str = "distgan"
    run_name: str | None = None
    progress: bool = True

    def validate(self) -> None:
        require_at_least_one(self, "log", ("every", "sample_every"))
        require_in_range(self, "log", "num_samples", 1, MAX_NUM_SAMPLES)
        if not self.project or len(self.project) > 128 or any(c in self.project for c in "/\\#?%:"):
            raise ConfigError(  # W&B refuses these only after the models are built
                f"log.project: a W&B project name is 1 to 128 characters without / \\ # ? % :, got {self.project!r}"
            )


@dataclass
class CheckpointConfig:
    """How often training state is saved and how many checkpoints are kept."""

    every: int = 1000
    keep: int = 3
    best: str | None = None  # an eval metric (fid, kid_mean, precision, ...): keep the best checkpoint; null: off

    def validate(self) -> None:
        if self.every < 1:
            raise ConfigError(f"checkpoint.every: must be >= 1, got {self.every}")
        if self.keep < 1:
            raise ConfigError(f"checkpoint.keep: must be >= 1, got {self.keep}")


@dataclass
class EvalConfig:
    """Evaluation during training (of the EMA generator when train.ema_kimg > 0); see docs/metrics.md."""

    every: int | None = None  # steps between evaluations (one also runs at the end); null: no evaluation
    metrics: tuple[str, ...] = ("fid",)  # fid, kid, is, pr, acc, fid_per_class, l1
    num_samples: int = 10000  # generated images per evaluation (image-to-image: at most the split's rows)
    num_real: int | None = None  # real images for the reference statistics; null: the whole split
    features: str = "inception"  # or classifier:PATH (scripts/train_classifier.py)
    inception_weights: str | None = None  # a state_dict file; null: torch hub's cache (downloaded where possible)
    batch_size: int = 64  # images per forward pass per process

    def validate(self) -> None:
        from distgan.metrics.settings import METRICS

        if self.every is not None:
            require_at_least_one(self, "eval", ("every",))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ConfigError(
                f"eval.metrics: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}"
            )
        require_in_range(self, "eval", "num_samples", 2, 10**7)
        require_in_range(self, "eval", "batch_size", 1, MAX_BATCH_SIZE)
        if self.num_real is not None:
            require_in_range(self, "eval", "num_real", 2, 10**8, " (or null for the whole split)")
        if self.features != "inception" and not (self.features.startswith("classifier:") and self.features[11:]):
            raise ConfigError(f"eval.features: must be 'inception' or 'classifier:PATH', got {self.features!r}")
        if "acc" in self.metrics and not self.features.startswith("classifier:"):
            raise ConfigError("eval.metrics: acc (class accuracy) needs eval.features=classifier:PATH")

    def settings(self, seed: int, split: str | None = None) -> EvalSettings:
        """The evaluator's settings (distgan.metrics) for this section."""
        from distgan.metrics.settings import EvalSettings

        return EvalSettings(
            metrics=tuple(self.metrics),
            num_samples=self.num_samples,
            num_real=self.num_real,
            features=self.features,
            inception_weights=self.inception_weights,
            batch_size=self.batch_size,
            seed=seed,
            split=split,
        )


@dataclass
class ModelParams:
    """Base of every family's model hyperparameters; `family` picks the registered family."""

    family: str = ""

    def validate(self, data: DataConfig) -> None:
        """Check the family's own keys against the data they will be trained on."""

    def check_config(self, cfg: Config) -> None:
        """Check the family's keys against the rest of the config (batch sizes, loss keys it cannot use)."""


@dataclass
class Config:
    """One experiment."""

    model: ModelParams
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = "run"  # the config's name (file stem); the default run directory is runs/<name>

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe) of the resolved config."""
        return _to_plain(dataclasses.asdict(self))


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "loss": LossConfig,
    "augment": AugmentConfig,
    "log": LogConfig,
    "checkpoint": CheckpointConfig,
    "eval": EvalConfig,
}


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a file in configs/ (`dcgan_faces` -> configs/dcgan_faces.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"--config {name_or_path}: no such file")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    hint = difflib.get_close_matches(name_or_path, known, n=1)
    hint_text = f" (did you mean '{hint[0]}'?)" if hint else f"; known: {', '.join(known)}"
    raise ConfigError(f"--config {name_or_path}: no such file or config name in {CONFIG_DIR}{hint_text}")


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a config file, apply `section.key=value` overrides, and validate everything."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not a text file; give a YAML config") from None
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot be read ({e.strerror})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of sections ({', '.join(['model', *SECTIONS])})")
    in_file = set(map(str, raw))
    overridden = apply_overrides(raw, overrides)
    try:
        return build_config(raw, name=path.stem)
    except ConfigError as e:
        key = str(e).split(":", 1)[0].split("[", 1)[0]  # train.betas[0] -> train.betas
        from_command_line = key in overridden or (key not in in_file and key in {k.split(".")[0] for k in overridden})
        where = "command-line override" if from_command_line else str(path)
        raise ConfigError(f"{where}: {e}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> set[str]:
    """Apply `a.b=value` strings (value parsed as YAML) in place; returns the dotted keys set."""
    keys = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected section.key=value, e.g. train.batch_size=256")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"override '{item}': key must be section.key, e.g. train.batch_size")
        if raw.get(parts[0]) is None:  # absent, or an empty `train:` in the file
            raw[parts[0]] = {}
        if not isinstance(raw[parts[0]], dict):
            raise ConfigError(f"override '{item}': '{parts[0]}' is not a section")
        try:
            raw[parts[0]][parts[1]] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(
                f"override '{item}': the value is not valid YAML ({first}); e.g. train.betas=[0.5,0.999], "
                "and quote a string that contains YAML syntax"
            ) from None
        keys.add(key.strip())
    return keys


def build_config(raw: dict[str, Any], name: str = "run") -> Config:
    """Validate a raw nested dict into a Config; raises ConfigError('key: problem')."""
    from distgan.registry import get_family  # registry imports config; import here to avoid a cycle

    sections = dict(raw)
    if "name" in sections:  # present in a saved run's config.yaml; the default run directory is runs/<name>
        name = sections.pop("name")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"name: must be a plain name (letters, digits, '-', '_', '.'; no path), got {name!r}; "
                "choose the run directory with --output-dir"
            )
    for key in sections:
        if key not in (*SECTIONS, "model"):
            raise ConfigError(_unknown(str(key), [*SECTIONS, "model"], "section"))
    model_raw = sections.get("model") or {}
    if not isinstance(model_raw, dict) or "family" not in model_raw:
        raise ConfigError("model.family: missing; name a registered family (e.g. gan, dcgan)")
    family = get_family(str(model_raw["family"]))
    built = {k: _build(cls, sections.get(k) or {}, k) for k, cls in SECTIONS.items()}
    model = _build(family.Params, model_raw, "model")
    cfg = Config(model=model, name=name, **built)
    for section in built.values():
        section.validate()
    model.validate(cfg.data)
    model.check_config(cfg)
    _check_best(cfg)
    # null recipe keys take the family's defaults here, so config.yaml and W&B record what is trained
    if cfg.loss.adversarial is None:
        cfg.loss.adversarial = family.default_loss
    if cfg.train.spectral_norm is None:
        cfg.train.spectral_norm = family.default_spectral_norm
    if cfg.train.channels_last is None:
        cfg.train.channels_last = family.default_channels_last
    return cfg


def _check_best(cfg: Config) -> None:
    """checkpoint.best names a value that the configured evaluation produces."""
    best = cfg.checkpoint.best
    if best is None:
        return
    from distgan.metrics.settings import LOWER_IS_BETTER, METRICS_KEYS

    if best not in LOWER_IS_BETTER:
        raise ConfigError(f"checkpoint.best: unknown metric {best!r}; choose from {', '.join(LOWER_IS_BETTER)}")
    if cfg.eval.every is None:
        raise ConfigError("checkpoint.best: needs evaluation during training; set eval.every")
    if not any(best in METRICS_KEYS[m] for m in cfg.eval.metrics):
        raise ConfigError(f"checkpoint.best: {best} is not computed by eval.metrics={list(cfg.eval.metrics)}")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}: must be a mapping of keys, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_unknown(f"{prefix}.{key}", [f"{prefix}.{k}" for k in fields], "key"))
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    return cls(**kwargs)


def _unknown(key: str, choices: list[str], what: str) -> str:
    hint = difflib.get_close_matches(key, choices, n=1)
    suggestion = f"did you mean '{hint[0]}'?" if hint else f"known: {', '.join(sorted(choices))}"
    return f"{key}: unknown {what} ({suggestion})"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the type hint `tp`, converting only where YAML is ambiguous (1e-4 is a str)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads off/no as false and on/yes as true
            value = next((a for a in args if str(a) in (("on", "yes") if value else ("off", "no"))), value)
        if not any(value == a and type(value) is type(a) for a in args):  # 1 == True, but 1 is no choice
            choices = ", ".join(str(a).lower() if isinstance(a, bool) else repr(a) for a in args)
            raise ConfigError(f"{key}: must be one of {choices}, got {value!r}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # a list of any length (or "a,b" from the CLI)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"{key}: {value} is out of range (at most {MAX_INT})")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(number)
        except OverflowError:  # an integer beyond float range
            number = math.inf
        if not math.isfinite(number):  # nan slips through every comparison; inf is never a sensible setting
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return os.path.expandvars(value) if key == "data.path" else value
    raise TypeError(f"config type {tp!r} of {key} is not supported")  # a bug in a Params class, not user input


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, in a fixed section order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
