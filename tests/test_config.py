"""Config loading and validation: every shipped config loads; bad input is one line naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distgan.config import CONFIG_DIR, dump_config, load_config
from distgan.errors import ConfigError
from distgan.logging.trackers import check_wandb
from distgan.registry import family_names
from tests.conftest import TEST_CONFIGS

ALL_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml")) + sorted(TEST_CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads(path: Path) -> None:
    cfg = load_config(str(path))
    assert cfg.model.family in family_names()
    assert cfg.name == path.stem


def test_config_by_name_and_overrides() -> None:
    cfg = load_config("dcgan_faces", ["train.batch_size=256", "data.path=/data/celeba", "train.lr_g=1e-4"])
    assert cfg.train.batch_size == 256
    assert cfg.data.path == "/data/celeba"
    assert cfg.train.lr_g == pytest.approx(1e-4)  # YAML reads 1e-4 as a string: coerced to float
    assert cfg.train.betas == (0.5, 0.999)
    assert cfg.model.ngf == 64 and cfg.model.z_dim == 100


def test_yaml_booleans_for_off_and_no() -> None:
    cfg = load_config("demo_digits", ["log.wandb=off", "train.mixed_precision=no"])  # YAML: false, false
    assert cfg.log.wandb == "off" and cfg.train.mixed_precision == "no"


def test_saved_config_loads_back(tmp_path: Path) -> None:
    cfg = load_config("gan_mnist", ["train.max_steps=7"])
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(cfg))
    again = load_config(str(saved))
    assert again.to_dict() == cfg.to_dict()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


BASE = {"model": {"family": "dcgan"}, "data": {"path": "x", "image_size": 64}}


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"train": {"batchsize": 3}}, "train.batchsize: unknown key (did you mean 'train.batch_size'?)"),
        ({"train": {"batch_size": "big"}}, "train.batch_size: expected an integer, got 'big'"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be in [1, 65536] (per process), got 0"),
        ({"train": {"lr_g": -1.0}}, "train.lr_g: must be in (0, 1]"),
        ({"train": {"betas": [0.5]}}, "train.betas: expected a list of 2 values"),
        ({"train": {"mixed_precision": "fp8"}}, "train.mixed_precision: must be one of"),
        ({"train": {"sync_bn": "yes"}}, "train.sync_bn: expected true or false"),
        ({"data": {"path": "x", "image_size": 48}}, "data.image_size: dcgan needs a power of two >= 16, got 48"),
        ({"data": {"path": "x", "channels": 2}}, "data.channels: must be one of 1, 3, got 2"),
        ({"data": {"path": ""}}, "data.path: is empty"),
        ({"model": {"family": "dcgna"}}, "model.family: unknown family 'dcgna' (did you mean 'dcgan'?)"),
        ({"model": {"family": "dcgan", "ngf": 0}}, "model.ngf: must be >= 1, got 0"),
        ({"model": {"family": "dcgan", "hidden": 3}}, "model.hidden: unknown key"),
        ({"trian": {}}, "trian: unknown section (did you mean 'train'?)"),
        ({"log": {"wandb": "maybe"}}, "log.wandb: must be one of"),
        ({"checkpoint": {"keep": 0}}, "checkpoint.keep: must be >= 1"),
    ],
)
def test_bad_config_is_one_line_naming_key_and_file(tmp_path: Path, patch: dict, expected: str) -> None:
    path = _write(tmp_path, yaml.safe_dump({**BASE, **patch}))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_bad_override_names_the_command_line() -> None:
    with pytest.raises(
        ConfigError, match=r"^command-line override: train.batch_size: must be in \[1, 65536\].*, got -3$"
    ):
        load_config("dcgan_faces", ["train.batch_size=-3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config("dcgan_faces", ["train.batch_size"])


def test_missing_config_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'dcgan_faces'"):
        load_config("dcgan_face")
    with pytest.raises(ConfigError, match="no such file"):
        load_config("nowhere/x.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(_write(tmp_path, "model: [unclosed")))


# Every numeric key: non-finite, out of the type's range, or absurd (the run would crash or do nothing later).
@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lr_d=inf", "train.lr_d: must be a finite number, got 'inf'"),
        ("train.lr_g=.nan", "train.lr_g: must be a finite number"),
        ("train.lr_g=1e400", "train.lr_g: must be a finite number"),
        ("train.lr_d=10", "train.lr_d: must be in (0, 1]"),
        ("train.max_seconds=nan", "train.max_seconds: must be a finite number"),  # nan > 0 is False: budget lost
        ("train.max_seconds=-.inf", "train.max_seconds: must be a finite number"),
        ("train.collective_timeout_s=inf", "train.collective_timeout_s: must be a finite number"),
        ("train.collective_timeout_s=nan", "train.collective_timeout_s: must be a finite number"),
        ("train.collective_timeout_s=1e30", "train.collective_timeout_s: must be in [1, 604800] seconds"),
        ("train.collective_timeout_s=0.001", "train.collective_timeout_s: must be in [1, 604800] seconds"),
        ("train.seed=-1", "train.seed: must be in [0, 4294967295], got -1"),
        ("train.seed=4294967296", "train.seed: must be in [0, 4294967295]"),
        ("train.seed=1e23", "train.seed: expected an integer, got '1e23'"),
        ("train.betas=[0.5,.nan]", "train.betas[1]: must be a finite number"),
        ("train.betas=[-0.1,0.9]", "train.betas: each must be in [0, 1)"),
        ("train.betas=[0.5,1.0]", "train.betas: each must be in [0, 1)"),
        ("train.batch_size=1000000000", "train.batch_size: must be in [1, 65536]"),
        ("train.max_steps=99999999999999999999999", "train.max_steps: 99999999999999999999999 is out of range"),
        ("data.image_size=8192", "data.image_size: must be in [4, 1024], got 8192"),
        ("data.load_size=100000", "data.load_size: must be in [64, 2048]"),
        ("data.num_workers=1000", "data.num_workers: must be in [0, 64]"),
        ("data.shuffle_buffer=1000000000", "data.shuffle_buffer: must be in [0, 1000000]"),
        ("data.num_classes=0", "data.num_classes: must be in [1, 100000]"),
        ("log.num_samples=100000", "log.num_samples: must be in [1, 1024]"),
        ("model.z_dim=100000000000000000000000", "model.z_dim: 100000000000000000000000 is out of range"),
        ("checkpoint.keep=-1", "checkpoint.keep: must be >= 1"),
        ("log.project=team/gan", "log.project: a W&B project name is 1 to 128 characters without /"),
    ],
)
def test_non_finite_and_absurd_numbers(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("dcgan_faces", [override])
    assert str(info.value).startswith(f"command-line override: {expected}") and "\n" not in str(info.value)


def test_model_floats_must_be_finite(tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump({"model": {"family": "pix2pix", "l1_weight": float("inf")}}))
    with pytest.raises(ConfigError, match=r"model.l1_weight: must be a finite number, got inf$"):
        load_config(str(path), ["data.path=x"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.betas=[0.5,", r"^override 'train.betas=\[0.5,': the value is not valid YAML \("),
        ("trian.batch_size=3", r"^command-line override: trian: unknown section \(did you mean 'train'\?\)$"),
        ('train.betas=[0.5,"x"]', r"^command-line override: train.betas\[1\]: expected a number"),
    ],
)
def test_override_errors_name_the_command_line(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config("dcgan_faces", [override])


def test_empty_section_in_file_takes_an_override(tmp_path: Path) -> None:
    path = _write(tmp_path, "model:\n  family: dcgan\ndata:\n  path: x\ntrain:\n")
    assert load_config(str(path), ["train.batch_size=7"]).train.batch_size == 7


@pytest.mark.parametrize("name", ["/somewhere/else", "../up", "a/b", "..", ".", "", 7, "x y"])
def test_name_must_be_a_plain_name(tmp_path: Path, name: object) -> None:
    path = _write(tmp_path, yaml.safe_dump({**BASE, "name": name}))
    with pytest.raises(ConfigError, match=r"name: must be a plain name \(letters, digits"):
        load_config(str(path))


def test_plain_name_sets_the_run_name(tmp_path: Path) -> None:
    assert load_config(str(_write(tmp_path, yaml.safe_dump({**BASE, "name": "faces-v2.1_a"})))).name == "faces-v2.1_a"


def test_binary_and_non_mapping_configs(tmp_path: Path) -> None:
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=r"weights.yaml: not a text file; give a YAML config$"):
        load_config(str(binary))
    for text in ("- a\n- b\n", "just a string\n", "42\n"):
        with pytest.raises(ConfigError, match="must be a mapping of sections"):
            load_config(str(_write(tmp_path, text)))


def test_online_wandb_needs_a_login_checked_up_front(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(ConfigError, match=r"^log.wandb: online W&B logging needs a login: run `wandb login`"):
        check_wandb("online")
    check_wandb("offline")
    check_wandb("auto")  # not logged in: auto means offline
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError, match=r"^WANDB_MODE \(with log.wandb=auto\): online W&B logging needs a login"):
        check_wandb("auto")
    monkeypatch.setenv("WANDB_MODE", "onlin")
    with pytest.raises(ConfigError, match="unknown W&B mode 'onlin'"):
        check_wandb("auto")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    check_wandb("online")
