"""Checkpoint files: safetensors + JSON round trips, atomic publish, rotation, clear errors."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from distgan.errors import DistganError
from distgan.train import checkpoint as ckpt


def test_optimizer_state_round_trips_without_pickle(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt.save_tree(opt.state_dict(), tmp_path, "opt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.json", "opt.safetensors"]
    json.loads((tmp_path / "opt.json").read_text())  # plain JSON, no pickle anywhere
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    fresh.load_state_dict(ckpt.load_tree(tmp_path, "opt"))
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])


def test_rng_state_round_trips(tmp_path: Path) -> None:
    ckpt.save_tree(ckpt.rng_state(), tmp_path, "rng_0")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(ckpt.load_tree(tmp_path, "rng_0"))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def _fake_checkpoint(root: Path, step: int, keep: int) -> Path:
    tmp = root / f".tmp-{step}"
    tmp.mkdir(parents=True)
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    save_file({"w": torch.arange(1000.0)}, str(tmp / "G.safetensors"))
    ckpt.write_manifest(tmp)
    ckpt.publish(tmp, ckpt.step_dir(root, step), root, keep)
    return ckpt.step_dir(root, step)


def test_publish_keeps_the_last_k_and_points_latest(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        _fake_checkpoint(tmp_path / "checkpoints", step, keep=2)
    kept = [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert kept == ["step_000000030", "step_000000040"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000000040"
    assert ckpt.find_checkpoint(tmp_path, "latest") == (tmp_path / "checkpoints" / "step_000000040", [])
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_an_unfinished_write_is_ignored(tmp_path: Path) -> None:
    _fake_checkpoint(tmp_path / "checkpoints", 10, keep=3)
    half = tmp_path / "checkpoints" / ".tmp-step_000000020"  # a crash mid-write: no manifest, not renamed
    half.mkdir()
    (half / "state.json").write_text("{}")
    assert ckpt.find_checkpoint(tmp_path, "latest")[0].name == "step_000000010"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.write_bytes(f.read_bytes()[:100]), "G.safetensors: truncated or changed (100 bytes"),
        (lambda f: f.write_bytes(f.read_bytes()[:-8] + b"corrupt!"), "G.safetensors: corrupted (checksum"),
        (lambda f: f.unlink(), "G.safetensors: missing from the checkpoint"),
    ],
    ids=["truncated", "corrupted", "missing"],
)
def test_damaged_checkpoint_is_named_and_latest_falls_back(tmp_path: Path, damage, message: str) -> None:
    root = tmp_path / "checkpoints"
    good = _fake_checkpoint(root, 10, keep=3)
    bad = _fake_checkpoint(root, 20, keep=3)
    damage(bad / "G.safetensors")
    with pytest.raises(DistganError, match=re.escape(message)) as info:
        ckpt.find_checkpoint(tmp_path, str(bad))
    assert "\n" not in str(info.value)
    found, notes = ckpt.find_checkpoint(tmp_path, "latest")
    assert found == good
    assert len(notes) == 1 and "skipping damaged checkpoint" in notes[0] and message.split(":")[0] in notes[0]


def test_find_checkpoint_errors_and_empty_run(tmp_path: Path) -> None:
    assert ckpt.find_checkpoint(tmp_path, "latest") == (None, [])  # nothing yet: start fresh
    with pytest.raises(DistganError, match="not a checkpoint folder"):
        ckpt.find_checkpoint(tmp_path, str(tmp_path / "nope"))


def test_weights_that_do_not_fit_name_the_file_and_key(tmp_path: Path) -> None:
    save_file({"weight": torch.zeros(5, 3), "bias": torch.zeros(2)}, str(tmp_path / "G.safetensors"))
    with pytest.raises(
        DistganError, match=r"G.safetensors: 'weight' has shape \(5, 3\) but the model expects \(2, 3\)"
    ):
        ckpt.load_weights(torch.nn.Linear(3, 2), tmp_path / "G.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DistganError, match="bad.safetensors: cannot read checkpoint weights"):
        ckpt.load_weights(torch.nn.Linear(3, 2), tmp_path / "bad.safetensors")


def _names(root: Path) -> list[str]:
    return [p.name for p in ckpt.list_checkpoints(root)]


def test_latest_is_the_head_of_the_line_and_a_branch_moves_later_ones_aside(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        _fake_checkpoint(root, step, keep=5)
    (root / "latest").write_text("step_000000020\n")  # e.g. a crash between a publish and its `latest`
    found, notes = ckpt.find_checkpoint(tmp_path, "latest")
    assert found == ckpt.step_dir(root, 20) and "not resuming from step_000000030" in notes[0]
    moved = ckpt.start_line(root, found)
    assert len(moved) == 1 and "moved the later checkpoints step_000000030" in moved[0]
    assert _names(root) == ["step_000000010", "step_000000020"]
    assert [p.name for p in (root / ckpt.ABANDONED).glob("*/step_*")] == ["step_000000030"]  # kept, not deleted
    _fake_checkpoint(root, 25, keep=1)  # the new line: pruning never looks at the abandoned one
    assert _names(root) == ["step_000000025"] and (root / "latest").read_text().strip() == "step_000000025"


def test_a_damaged_head_is_never_left_alone_by_pruning(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    _fake_checkpoint(root, 10, keep=2)
    bad = _fake_checkpoint(root, 20, keep=2)
    (bad / "G.safetensors").write_bytes(b"torn")
    found, notes = ckpt.find_checkpoint(tmp_path, "latest")
    assert found.name == "step_000000010" and "skipping damaged checkpoint" in notes[0]
    ckpt.start_line(root, found)
    _fake_checkpoint(root, 15, keep=1)
    assert _names(root) == ["step_000000015"]
    assert ckpt.find_checkpoint(tmp_path, "latest")[0] == ckpt.step_dir(root, 15)


@pytest.mark.parametrize(
    "manifest", ['["a list"]', '{"G.safetensors": 3}', '{"../state.json": {"bytes": 1, "sha256": "x"}}', "{}"]
)
def test_a_manifest_of_the_wrong_shape_is_one_line_and_the_fallback_goes_on(tmp_path: Path, manifest: str) -> None:
    root = tmp_path / "checkpoints"
    good = _fake_checkpoint(root, 10, keep=3)
    bad = _fake_checkpoint(root, 20, keep=3)
    (bad / ckpt.MANIFEST).write_text(manifest)
    found, notes = ckpt.find_checkpoint(tmp_path, "latest")
    assert found == good and len(notes) == 1 and "not a distgan checkpoint manifest" in notes[0]


def test_a_folder_without_manifest_is_skipped_with_a_note_and_all_damaged_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    good = _fake_checkpoint(root, 10, keep=3)
    (root / "step_000000020").mkdir()
    (root / "latest").write_text("step_000000020\n")
    found, notes = ckpt.find_checkpoint(tmp_path, "latest")
    assert found == good and notes == [
        f"skipping {root / 'step_000000020'}: no manifest.json (an unfinished or foreign folder)"
    ]
    (good / "state.json").write_text("{}")
    with pytest.raises(DistganError, match="--resume latest: no checkpoint in .* verifies") as info:
        ckpt.find_checkpoint(tmp_path, "latest")
    assert "\n" not in str(info.value)


def _streak_checkpoint(root: Path, step: int, streak: int, keep: int) -> None:
    tmp = root / f".tmp-{step}"
    tmp.mkdir(parents=True)
    (tmp / "state.json").write_text(json.dumps({"step": step, "nonfinite_streak": streak}))
    ckpt.write_manifest(tmp)
    ckpt.publish(tmp, ckpt.step_dir(root, step), root, keep)


def test_checkpoints_inside_a_nonfinite_streak_never_push_out_the_last_good_one(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step, streak in [(1, 0), (2, 0), (3, 1), (4, 2), (5, 3)]:
        _streak_checkpoint(root, step, streak, keep=2)
    assert _names(root) == ["step_000000002", "step_000000004", "step_000000005"]
    assert ckpt.set_aside_nonfinite(root) == ckpt.step_dir(root, 2)  # after the divergence
    assert _names(root) == ["step_000000002"] and (root / "latest").read_text().strip() == "step_000000002"
    assert sorted(p.name for p in (root / ckpt.ABANDONED).glob("*/step_*")) == ["step_000000004", "step_000000005"]


def test_the_exported_generator_is_replaced_in_one_step(tmp_path: Path) -> None:
    out = tmp_path / "generator"
    (out).mkdir()  # a plain folder, as older versions wrote it
    (out / "config.json").write_text(json.dumps({"step": 0}))
    for step in (2, 4, 6):
        ckpt.export_generator(torch.nn.Linear(2, 2), {"step": step}, out)
        assert out.is_symlink() and ckpt.exported_step(out) == step
        assert set(p.name for p in out.iterdir()) == {"model.safetensors", "config.json"}
    versions = sorted(p.name for p in ckpt.versions_dir(tmp_path / "generator").iterdir())
    assert versions == ["step_000000004", "step_000000006"]  # the previous one stays one export longer
    ckpt.export_generator(torch.nn.Linear(2, 2), {"step": 6}, out)  # the same step again: a new folder
    assert ckpt.exported_step(out) == 6 and (out / "model.safetensors").is_file()
    assert ckpt.exported_step(tmp_path / "nothing") is None


def test_generators_exported_side_by_side_keep_their_own_versions(tmp_path: Path) -> None:
    small, large = torch.nn.Linear(2, 2), torch.nn.Linear(3, 3)
    ckpt.export_generator(small, {"step": 0}, tmp_path / "a")
    ckpt.export_generator(large, {"step": 0}, tmp_path / "b")  # same step, same parent folder
    ckpt.export_generator(large, {"step": 1}, tmp_path / "b")
    assert load_file(tmp_path / "a" / "model.safetensors")["weight"].shape == (2, 2)
    assert load_file(tmp_path / "b" / "model.safetensors")["weight"].shape == (3, 3)


def test_rotation_never_prunes_the_best_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8):
        tmp = root / f".tmp-step_{step:09d}"
        tmp.mkdir(parents=True)
        (tmp / "state.json").write_text(json.dumps({"step": step}))
        ckpt.write_manifest(tmp)
        ckpt.publish(tmp, ckpt.step_dir(root, step), root, keep=1)
        if step == 4:
            ckpt.write_best(root, {"checkpoint": "step_000000004", "metric": "fid", "value": 1.0, "step": 4})
    assert sorted(p.name for p in ckpt.list_checkpoints(root)) == ["step_000000004", "step_000000008"]
    assert ckpt.read_best(root)["step"] == 4
    (root / "best.json").write_text('{"checkpoint": "../elsewhere", "value": 1}')  # never outside checkpoints/
    assert ckpt.read_best(root) is None


def test_loaded_adam_moments_take_a_channels_last_parameters_layout(tmp_path: Path) -> None:
    """Fused Adam reads a parameter and its moments as flat memory: a contiguous moment beside an NHWC
    parameter would pair the wrong elements. After loading, the next step equals the uninterrupted one."""
    torch.manual_seed(0)
    grads = [torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    straight = torch.nn.Parameter(torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last))
    resumed = torch.nn.Parameter(straight.detach().clone(memory_format=torch.channels_last))
    opt = torch.optim.Adam([straight], lr=0.1, fused=True)
    straight.grad = grads[0]
    opt.step()
    ckpt.save_tree(opt.state_dict(), tmp_path, "opt")
    with torch.no_grad():
        resumed.copy_(straight)
    loaded = torch.optim.Adam([resumed], lr=0.1, fused=True)
    loaded.load_state_dict(ckpt.load_tree(tmp_path, "opt"))
    ckpt.match_param_layout(loaded)
    assert loaded.state[resumed]["exp_avg"].stride() == resumed.stride()
    for opt_, p in ((opt, straight), (loaded, resumed)):
        p.grad = grads[1]
        opt_.step()
    assert torch.equal(straight, resumed)
