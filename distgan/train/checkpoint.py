"""Checkpoints on disk: safetensors for every tensor, JSON for everything else; nothing is pickled.

Layout of a run directory's `checkpoints/`:
    step_000001000/   G.safetensors, D.safetensors, opt_G.{safetensors,json}, opt_D.{...},
                      scaler_G.json, scaler_D.json, state.json, config.yaml, samples.safetensors (the
                      fixed sample inputs), rank_<r>.{safetensors,json} (each rank's RNG states and data
                      position), manifest.json (size + sha256 of every file, written last)
    latest            text file naming the newest complete step folder
A checkpoint is written to a temporary folder and renamed into place, so an interrupted write never
replaces or damages an earlier checkpoint; only the newest `keep` are kept. Loading verifies every file
against the manifest and never unpickles anything.
The exported generator (`generator/model.safetensors` + `generator/config.json`) is separate: it is
all that sampling needs, without the training config.

`save_checkpoint` / `load_checkpoint` take the state to store by name (`Contents`), so a module with state of
its own (an EMA generator, say) adds an entry instead of editing this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import distgan
from distgan.config import Config, dump_config
from distgan.errors import DistganError
from distgan.family import Family
from distgan.registry import get_family
from distgan.train.spectral import plain_state_dict

STEP_PREFIX = "step_"


# --- nested state (optimizer, RNG) <-> safetensors + JSON --------------------------------------------
def _split(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """Replace every tensor in a nested structure by a reference, collecting the tensors."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(obj.copy())
        return {"__ndarray__": path}
    if isinstance(obj, dict):
        if obj and all(isinstance(k, int) for k in obj):  # optimizer state is keyed by param index
            return {"__intkeys__": {str(k): _split(v, tensors, f"{path}.{k}") for k, v in obj.items()}}
        return {k: _split(v, tensors, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    return obj


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__intkeys__" in obj:
            return {int(k): _join(v, tensors) for k, v in obj["__intkeys__"].items()}
        if "__tuple__" in obj:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def save_tree(obj: Any, folder: Path, name: str) -> None:
    """Write a nested structure as `name.safetensors` (its tensors) + `name.json` (the rest)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(obj, tensors, name)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def load_tree(folder: Path, name: str) -> Any:
    """Inverse of `save_tree` (tensors on CPU)."""
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return _join(json.loads((folder / f"{name}.json").read_text()), tensors)


# --- RNG -------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU/CUDA, numpy, python)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(tuple(state["numpy"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --- checkpoint folders ----------------------------------------------------------------------------
# The rule for `latest` (README, Fault tolerance): `latest` names the head of the run's line of history and a
# checkpoint counts as published once `latest` has named it. `--resume latest` starts from that head, or, when
# it is damaged, from the newest older checkpoint that verifies; never from a newer folder. Resuming from an
# older step starts a new line: the checkpoints after it (an abandoned line, or damaged ones skipped) are moved
# to `checkpoints/abandoned/`, never resumed from and never deleted.
MANIFEST = "manifest.json"
ABANDONED = "abandoned"


def step_dir(root: Path, step: int) -> Path:
    return root / f"{STEP_PREFIX}{step:09d}"


def _step_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX))


def list_checkpoints(root: Path) -> list[Path]:
    """Published checkpoint folders (with a manifest), oldest first; not yet verified."""
    return [p for p in _step_folders(root) if (p / MANIFEST).exists()]


def read_latest(root: Path) -> str | None:
    """The folder name `latest` holds, or None when there is no (usable) `latest` file."""
    try:
        name = (root / "latest").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if name.startswith(STEP_PREFIX) and "/" not in name else None


def write_manifest(folder: Path) -> None:
    """Size and sha256 of every file, written last: a checkpoint without it is incomplete."""
    entries = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(folder.iterdir())}
    (folder / MANIFEST).write_text(json.dumps(entries, indent=1))


def verify(folder: Path) -> None:
    """Check every file against the manifest; raises DistganError naming the first bad file."""
    manifest = folder / MANIFEST
    try:
        entries = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        raise DistganError(
            f"{manifest}: unreadable checkpoint manifest ({type(e).__name__}); incomplete checkpoint"
        ) from None
    if not _manifest_shape_ok(entries):
        raise DistganError(f"{manifest}: not a distgan checkpoint manifest (expected file name -> bytes, sha256)")
    for name, entry in entries.items():
        file = folder / name
        if not file.is_file():
            raise DistganError(f"{file}: missing from the checkpoint")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise DistganError(f"{file}: truncated or changed ({size} bytes, {entry['bytes']} written)")
        if _sha256(file) != entry["sha256"]:
            raise DistganError(f"{file}: corrupted (checksum differs from when it was written)")


def _manifest_shape_ok(entries: Any) -> bool:
    """{plain file name: {"bytes": int, "sha256": str}}, as write_manifest writes it, and not empty."""
    return (
        isinstance(entries, dict)
        and bool(entries)
        and all(
            isinstance(name, str)
            and name == Path(name).name
            and name not in ("", ".", "..")
            and isinstance(entry, dict)
            and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str)
            for name, entry in entries.items()
        )
    )


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, text: str) -> None:
    """Replace a small text file in one step (write, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def nonfinite_streak(folder: Path) -> int:
    """Steps in a row skipped as non-finite when the checkpoint was written (0: a good checkpoint)."""
    try:
        return int(json.loads((folder / "state.json").read_text()).get("nonfinite_streak", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def publish(tmp: Path, final: Path, root: Path, keep: int) -> None:
    """Rename a fully written temporary folder into place, point `latest` at it, prune old ones.

    Pruning keeps the newest `keep` checkpoints and, in addition, the newest good one (written outside a
    non-finite streak), so that checkpoints from inside a streak never push the last good one out.
    """
    if final.exists():  # the same step saved twice (e.g. end of run right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(root / "latest", final.name + "\n")
    line = [p for p in list_checkpoints(root) if p.name <= final.name]  # never newer ones: see the rule above
    good = [p for p in line if nonfinite_streak(p) == 0]
    best = read_best(root)
    protected = set(line[-keep:]) | set(good[-1:]) | ({root / best["checkpoint"]} if best else set())
    for old in line:
        if old not in protected:
            shutil.rmtree(old, ignore_errors=True)


BEST = "best.json"


def read_best(root: Path) -> dict[str, Any] | None:
    """The best checkpoint by `checkpoint.best` ({"checkpoint", "metric", "value", "step"}), if it still exists."""
    try:
        best = json.loads((root / BEST).read_text())
        folder = root / str(best["checkpoint"])
        float(best["value"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return best if folder.is_dir() and folder.parent == root else None


def write_best(root: Path, best: dict[str, Any]) -> None:
    """Name the best checkpoint (replaced atomically); `publish` never prunes it."""
    write_atomic(root / BEST, json.dumps(best) + "\n")


def find_checkpoint(run_dir: Path, resume: str) -> tuple[Path | None, list[str]]:
    """The checkpoint to resume and notes for the user.

    `latest`: the checkpoint `latest` names, or the newest older one that verifies (each one skipped gets a
    note); None when the run has no checkpoint folder yet; a DistganError when it has some but none verifies.
    A path: that checkpoint folder (or a run / checkpoints folder's latest), which must verify.
    """
    if resume == "latest":
        return _find_latest(run_dir / "checkpoints")
    path = Path(resume)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "latest").is_file():  # a checkpoints/ folder
        path = path / (path / "latest").read_text().strip()
    if not (path / MANIFEST).is_file():
        raise DistganError(
            f"--resume {resume}: not a checkpoint folder (no {MANIFEST}); give a step_* folder or 'latest'"
        )
    verify(path)
    return path, []


def _find_latest(root: Path) -> tuple[Path | None, list[str]]:
    folders = _step_folders(root)
    head = read_latest(root)
    notes = []
    if head is not None:
        if not (root / head).is_dir():
            notes.append(f"{root / 'latest'} names {head}, which is missing; falling back to an older checkpoint")
        newer = [p for p in folders if p.name > head]
        if newer:
            notes.append(
                f"not resuming from {', '.join(p.name for p in newer)}: newer than {root / 'latest'} ({head}), "
                "so not part of this run's line of history"
            )
        folders = [p for p in folders if p.name <= head]
    for candidate in reversed(folders):
        if not (candidate / MANIFEST).exists():
            notes.append(f"skipping {candidate}: no {MANIFEST} (an unfinished or foreign folder)")
            continue
        try:
            verify(candidate)
        except DistganError as e:
            notes.append(f"skipping damaged checkpoint: {e}")
            continue
        return candidate, notes
    if folders:
        raise DistganError(
            f"--resume latest: no checkpoint in {root} verifies ({'; '.join(notes)}); "
            "give --resume a checkpoint folder that verifies, or move the folder away to start afresh"
        )
    return None, notes


def start_line(root: Path, resumed: Path | None) -> list[str]:
    """Make the resumed checkpoint the head of the run's line of history (main process, before training).

    Checkpoint folders of `root` after its step (an abandoned line, or damaged ones that were skipped) move to
    `root/abandoned/<time>/`: never resumed from, never pruned, never deleted. Returns a note, if any moved.
    """
    if resumed is None:
        return []
    later = [p for p in _step_folders(root) if p.name > resumed.name]
    if not later:
        if resumed.parent.resolve() == root.resolve():
            write_atomic(root / "latest", resumed.name + "\n")
        return []
    aside = root / ABANDONED / time.strftime("%Y%m%dT%H%M%S")
    while aside.exists():
        aside = aside.with_name(aside.name + "+")
    aside.mkdir(parents=True)
    for folder in later:
        os.replace(folder, aside / folder.name)
    if resumed.parent.resolve() == root.resolve():
        write_atomic(root / "latest", resumed.name + "\n")
    else:
        (root / "latest").unlink(missing_ok=True)  # the first checkpoint of this run will set it
    return [
        f"resuming at {resumed.name} starts a new line of history: moved the later checkpoints "
        f"{', '.join(p.name for p in later)} to {aside} (not resumed from, not deleted)"
    ]


def set_aside_nonfinite(root: Path) -> Path | None:
    """After a divergence: move the checkpoints written inside the non-finite streak after the last good one
    to `abandoned/`, point `latest` at that good one and return it (None when there is none)."""
    line = list_checkpoints(root)
    good = [p for p in line if nonfinite_streak(p) == 0]
    if not good:
        return None
    start_line(root, good[-1])
    return good[-1]


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Load a safetensors state dict; a mismatch is a one-line error naming the file."""
    try:
        state = load_file(str(file))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise DistganError(f"{file}: cannot read checkpoint weights ({e})") from None
    expected = module.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        raise DistganError(
            f"{file}: weights do not fit this model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); "
            "was it saved with another model.family or config?"
        )
    for key, tensor in state.items():
        if expected[key].shape != tensor.shape:
            raise DistganError(
                f"{file}: '{key}' has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(expected[key].shape)}; was it saved with another config (ngf/ndf/image_size)?"
            )
    module.load_state_dict(state)


RAW_WEIGHTS = "model_raw.safetensors"  # the trained G beside the EMA one in an exported generator


def versions_dir(out: Path) -> Path:
    """Where the versions of the export `out` live: `.generator-versions/` beside `generator`. Named after `out`,
    so that exports into one folder (e.g. several generators side by side) never prune each other's."""
    return out.parent / f".{out.name}-versions"


def export_generator(G: torch.nn.Module, meta: dict[str, Any], out: Path, raw: torch.nn.Module | None = None) -> None:
    """Write the generator (`model.safetensors` + `config.json`: family, params, data spec) and publish it.

    With an EMA generator, `G` is the EMA (what sampling and evaluation use by default) and `raw` the trained G,
    written beside it as `model_raw.safetensors`.

    `out` is a symbolic link to a complete folder under `.generator-versions/`; it is replaced by renaming a
    new link over it, one atomic step, so a crash at any moment leaves `out` naming a complete generator.
    The previous version is kept one export longer (a sampler may be reading it).
    """
    versions = versions_dir(out)
    folder = versions / f"{STEP_PREFIX}{meta.get('step', 0):09d}"
    tmp = versions / f".tmp-{folder.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(_plain_cpu_state(G), str(tmp / "model.safetensors"))
        if raw is not None:
            save_file(_plain_cpu_state(raw), str(tmp / RAW_WEIGHTS))
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    previous = Path(os.readlink(out)).name if out.is_symlink() else ""
    while folder.exists():  # the same step exported again: `out` may name the existing folder, keep it
        folder = folder.with_name(folder.name + "+")
    os.replace(tmp, folder)
    link = out.with_name(f".{out.name}.link")
    link.unlink(missing_ok=True)
    os.symlink(f"{versions.name}/{folder.name}", link)
    if out.is_dir() and not out.is_symlink():  # a plain folder from an older distgan: moved aside once
        os.replace(out, versions / "pre-versions")
    os.replace(link, out)
    keep = {folder.name, previous}
    for old in versions.iterdir():
        if old.name not in keep and not old.name.startswith(".tmp-"):
            shutil.rmtree(old, ignore_errors=True)


def exported_step(out: Path) -> int | None:
    """The step of the exported generator, or None when there is none (or it is unreadable)."""
    try:
        return int(json.loads((out / "config.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def generator_meta(cfg: Config, family: Family, step: int) -> dict[str, Any]:
    """What `distgan.sampling.load_generator` needs to rebuild G without the training config."""
    return {
        "family": cfg.model.family,
        "params": cfg.to_dict()["model"],
        "spec": family.spec.to_dict(),
        "step": step,
        # model.safetensors holds the EMA of G when train.ema_kimg > 0, with the trained G in model_raw.safetensors
        "weights": "ema" if cfg.train.ema_kimg > 0 else "raw",
        "distgan_version": distgan.__version__,
        "config": yaml.safe_load(dump_config(cfg)),
    }


# --- what a checkpoint holds -----------------------------------------------------------------------
@dataclass
class TrainState:
    """Progress counters saved in every checkpoint (per-rank RNG and data position live beside it)."""

    step: int = 0
    images_seen: int = 0
    wandb_run_id: str | None = None
    world_size: int = 1
    global_batch: int = 0
    nonfinite_streak: int = 0  # steps in a row skipped as non-finite when saved; 0 marks a good checkpoint


@dataclass
class Contents:
    """The state a checkpoint stores, by name: each entry becomes its own files, sealed by the manifest.

    modules: `<name>.safetensors` (state dict); optimizers: `opt_<name>.{safetensors,json}`; scalers:
    `scaler_<name>.json`; tensors: `<name>.safetensors` (plain tensors, read back with `read_tensors`).
    """

    modules: dict[str, torch.nn.Module] = field(default_factory=dict)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def save_checkpoint(
    acc: Accelerator,
    run_dir: Path,
    contents: Contents,
    state: TrainState,
    position: tuple[int, int],
    config_text: str,
    keep: int,
) -> Path:
    """All ranks: each writes its RNG and data position; the main process writes the rest and publishes
    the folder atomically (temporary folder, manifest last, rename). Returns the published folder."""
    root = run_dir / "checkpoints"
    final = step_dir(root, state.step)
    tmp = root / f".tmp-{final.name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        with disk_errors(tmp, "the checkpoint"):
            tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    with disk_errors(tmp, "the checkpoint"):
        _write_contents(acc, tmp, contents, state, position, config_text)
    acc.wait_for_everyone()  # every rank's file is in place before the manifest seals the folder
    if acc.is_main_process:
        with disk_errors(tmp, "the checkpoint"):
            write_manifest(tmp)
            publish(tmp, final, root, keep)
    return final


def _write_contents(
    acc: Accelerator, tmp: Path, contents: Contents, state: TrainState, position: tuple[int, int], config_text: str
) -> None:
    save_tree({"rng": rng_state(), "data": list(position)}, tmp, f"rank_{acc.process_index}")
    if acc.is_main_process:
        for name, module in contents.modules.items():
            save_file(_cpu_state(module), str(tmp / f"{name}.safetensors"))
        for name, tensors in contents.tensors.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / f"{name}.safetensors"))
        for name, optimizer in contents.optimizers.items():
            save_tree(optimizer.state_dict(), tmp, f"opt_{name}")
        for name, scaler in contents.scalers.items():
            (tmp / f"scaler_{name}.json").write_text(json.dumps(scaler.state_dict()))
        (tmp / "state.json").write_text(json.dumps(asdict(state)))
        (tmp / "config.yaml").write_text(config_text)


@contextmanager
def disk_errors(path: Path, what: str) -> Iterator[None]:
    """A failed write (full disk, read-only or vanished folder) becomes one line naming it; the temporary
    files of the write are removed, and what was published before is untouched."""
    try:
        yield
    except (OSError, SafetensorError) as e:
        if path.name.startswith(".tmp-"):
            shutil.rmtree(path, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        where = getattr(e, "filename", None) or path
        raise DistganError(
            f"{where}: cannot write {what} ({reason}); what was written before is untouched: free space or "
            "fix the folder, then --resume latest"
        ) from None


def load_checkpoint(folder: Path, contents: Contents, rank: int, world: int) -> tuple[TrainState, tuple[int, int]]:
    """Restore every module, optimizer and (enabled) scaler of `contents`, and the counters; this rank's RNG
    and data position if the number of processes is unchanged (else the stream restarts at the next epoch)."""
    for name, module in contents.modules.items():
        load_weights(module, folder / f"{name}.safetensors")
    for name, optimizer in contents.optimizers.items():
        optimizer.load_state_dict(load_tree(folder, f"opt_{name}"))
        match_param_layout(optimizer)
    for name, scaler in contents.scalers.items():
        scaler_state = json.loads((folder / f"scaler_{name}.json").read_text())
        if scaler_state and scaler.is_enabled():
            scaler.load_state_dict(scaler_state)
    saved = json.loads((folder / "state.json").read_text())
    state = TrainState(**{k: v for k, v in saved.items() if k in TrainState.__dataclass_fields__})
    if state.world_size == world:
        rank_state = load_tree(folder, f"rank_{rank}")
        set_rng_state(rank_state["rng"])
        return state, tuple(rank_state["data"])
    epoch = load_tree(folder, "rank_0")["data"][0]
    return state, (epoch + 1, 0)


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded per-parameter state tensor (Adam's moments) its parameter's memory layout.

    Saved tensors come back contiguous, while a channels_last parameter is NHWC; fused Adam walks the
    parameter, its gradient and its moments as flat memory, so mismatched layouts would silently pair the
    wrong elements (an update off by the size of the moments, not an error)."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def read_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """A `Contents.tensors` entry of a saved checkpoint."""
    return load_file(str(folder / f"{name}.safetensors"))


def check_compatible(folder: Path, cfg: Config) -> None:
    """A checkpoint of another family, model shape, data shape or spectral norm is a clear error, not a
    mismatch of weight names or sizes."""
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    now = cfg.to_dict()
    pairs = [(f"model.{k}", saved["model"].get(k), v) for k, v in now["model"].items()]
    pairs += [(f"data.{k}", saved["data"].get(k), now["data"][k]) for k in ("image_size", "channels", "num_classes")]
    default_sn = get_family(cfg.model.family).default_spectral_norm  # checkpoints from before the key existed
    pairs += [("train.spectral_norm", saved["train"].get("spectral_norm") or default_sn, now["train"]["spectral_norm"])]
    for key, old, new in pairs:
        if old != new:
            raise DistganError(
                f"{folder}: saved with {key}={old}, but this run has {key}={new}; resume with the same "
                "model, image shape and spectral norm, or start a new --output-dir"
            )


def match_global_batch(folder: Path, cfg: Config, world_size: int) -> list[str]:
    """Keep the checkpoint's global batch when the number of processes changed (via grad_accum)."""
    state = json.loads((folder / "state.json").read_text())
    saved_world, saved_global = state.get("world_size", world_size), state.get("global_batch", 0)
    if saved_world == world_size or not saved_global:
        return []
    per_step = cfg.train.batch_size * world_size
    if saved_global % per_step:
        raise DistganError(
            f"{folder}: saved with {saved_world} processes and a global batch of {saved_global}; with "
            f"{world_size} processes x train.batch_size={cfg.train.batch_size} no whole train.grad_accum keeps it; "
            f"set train.batch_size so that {saved_global} is a multiple of batch_size x {world_size}"
        )
    cfg.train.grad_accum = saved_global // per_step
    return [
        f"resuming {saved_world} processes' run on {world_size}: train.grad_accum={cfg.train.grad_accum} keeps "
        f"the global batch of {saved_global}; the data stream restarts at the next epoch (its position is per process)"
    ]


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _plain_cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An exported network's weights: parametrizations (spectral norm) baked in, so that the family's network
    as built loads them without knowing how it was trained."""
    return {k: v.detach().cpu().contiguous() for k, v in plain_state_dict(module).items()}
