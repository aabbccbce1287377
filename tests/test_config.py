"""Config loading and validation: every shipped config loads; bad input is one line naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distgan.config import CONFIG_DIR, dump_config, load_config
from distgan.errors import ConfigError
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
        ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1, got 0"),
        ({"train": {"lr_g": -1.0}}, "train.lr_g: must be > 0"),
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
    with pytest.raises(ConfigError, match=r"^command-line override: train.batch_size: must be >= 1, got -3$"):
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
