"""scripts/convert_stylegan2.py on NVIDIA-format data: the shared official snapshot converts to exactly the
reference tensors and kwargs; planted malicious, truncated and non-pickle files are one `error:` line, exit 2,
and nothing in them runs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, run
from tests.models.official_pickles import MALICIOUS, dumps, malicious_pickles, snapshot_of

SHARED = REPO.parent / "shared" / "stylegan2"
REF = SHARED / "small_uncond"
SNAPSHOT = REF / "network-snapshot.pkl"
OUTPUTS = ("G.safetensors", "D.safetensors", "G_ema.safetensors", "config.json")
needs_shared = pytest.mark.skipif(not SNAPSHOT.is_file(), reason=f"no shared stylegan2 reference data at {SHARED}")


def _load_script():
    """The script as a module, for in-process calls of main() (no scripts/ folder on sys.path)."""
    spec = importlib.util.spec_from_file_location("convert_stylegan2", REPO / "scripts" / "convert_stylegan2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_stylegan2 = _load_script()


def convert(*args: str | Path):
    """The script as users run it (its own process: real exit status and stderr)."""
    return run([sys.executable, "scripts/convert_stylegan2.py", *map(str, args)], timeout=120)


def assert_one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    if not SNAPSHOT.is_file():
        pytest.skip(f"no shared stylegan2 reference data at {SHARED}")
    out = tmp_path_factory.mktemp("convert") / "small_uncond"
    result = convert("--pkl", SNAPSHOT, "--out", out)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return out


@needs_shared
@pytest.mark.parametrize("network, reference", [("G_ema", "expected_G_ema"), ("G", "G"), ("D", "D")])
def test_tensors_equal_the_reference(converted, network, reference):
    got, expected = load_file(converted / f"{network}.safetensors"), load_file(REF / f"{reference}.safetensors")
    names = json.loads((REF / "names.json").read_text())["D" if network == "D" else "G"]
    assert sorted(got) == sorted(expected) == sorted(name for name, _, _ in names)
    for name, shape, dtype in names:
        assert list(got[name].shape) == shape and str(got[name].dtype) == f"torch.{dtype}"
        assert got[name].dtype == expected[name].dtype and torch.equal(got[name], expected[name]), name


@needs_shared
def test_state_dict_order_is_the_official_one():
    # safetensors files keep their keys sorted; the reader's order is state_dict()'s, as names.json records it
    from distgan.models.official_pickle import read_official_pickle

    snapshot = read_official_pickle(SNAPSHOT)
    names = json.loads((REF / "names.json").read_text())
    for network, key in (("G", "G"), ("G_ema", "G"), ("D", "D")):
        state_dict = getattr(snapshot, network).state_dict
        assert [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in state_dict.items()] == names[key]


@needs_shared
def test_config_records_kwargs_and_source(converted):
    config = json.loads((converted / "config.json").read_text())
    reference = json.loads((REF / "config.json").read_text())
    assert config["G_kwargs"] == reference["G_kwargs"] and config["D_kwargs"] == reference["D_kwargs"]
    assert config["augment_p"] == 0.2 and config["training_set_kwargs"]["resolution"] == 32
    digest = hashlib.sha256(SNAPSHOT.read_bytes()).hexdigest()
    assert config["source"] == {"file": "network-snapshot.pkl", "sha256": digest}
    assert sorted(p.name for p in converted.parent.iterdir()) == ["small_uncond"]  # no temporary folder left


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "MARKER"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(malicious_pickles(marker)["os.system"])
    result = convert("--pkl", pkl, "--out", tmp_path / "out")
    assert result.returncode == 2
    line = assert_one_error_line(result.stderr)
    assert "posix.system" in line and "nothing from the pickle was executed" in line and str(pkl) in line
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", MALICIOUS[1:])
def test_other_malicious_pickles_in_process(tmp_path, capsys, kind):
    marker = tmp_path / "MARKER"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(malicious_pickles(marker)[kind])
    assert convert_stylegan2.main(["--pkl", str(pkl), "--out", str(tmp_path / "out")]) == 2
    assert "refused global builtins." in assert_one_error_line(capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "out").exists()


HONEST = dumps(snapshot_of(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)))
TRUNCATED = HONEST[: len(HONEST) // 2]


@pytest.mark.parametrize("content", [b"not a pickle at all\n", TRUNCATED], ids=["text", "truncated"])
def test_damaged_files_give_one_error_line(tmp_path, capsys, content):
    pkl = tmp_path / "snapshot.pkl"
    pkl.write_bytes(content)
    assert convert_stylegan2.main(["--pkl", str(pkl), "--out", str(tmp_path / "out")]) == 2
    assert "not a readable official pickle" in assert_one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@needs_shared
def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("earlier conversion")
    assert convert_stylegan2.main(["--pkl", str(SNAPSHOT), "--out", str(out)]) == 2
    assert "pass --force" in assert_one_error_line(capsys.readouterr().err)
    assert (out / "old.txt").exists()
    assert convert_stylegan2.main(["--pkl", str(SNAPSHOT), "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old folder and the temporary one are gone


def test_missing_pickle_gives_one_error_line(tmp_path, capsys):
    assert convert_stylegan2.main(["--pkl", str(tmp_path / "none.pkl"), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read" in assert_one_error_line(capsys.readouterr().err)
