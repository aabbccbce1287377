"""Convert an official stylegan2-ada-pytorch snapshot pickle to safetensors + JSON, executing nothing from it.

    python scripts/convert_stylegan2.py --pkl network-snapshot-000800.pkl --out converted/ffhq [--force]

Writes DIR/G.safetensors, DIR/D.safetensors, DIR/G_ema.safetensors (every parameter and buffer, named as the
official modules' state_dict() names them) and DIR/config.json {G_kwargs, D_kwargs, training_set_kwargs,
augment_p, source: {file, sha256}, distgan: the model.* and data.* keys of these networks}. The pickle is
read by an allow-list unpickler (`distgan.models.official_pickle`): the Python source embedded in it is never
run, and a pickle asking for anything else is refused. DIR is written in a temporary folder beside it and
renamed into place, so it is either complete or absent; an existing non-empty DIR is replaced only with --force.
Errors are one `error:` line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distgan.errors import DistganError  # noqa: E402  (stdlib only: --help stays fast)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pkl", required=True, type=Path, help="official network-snapshot-*.pkl")
    parser.add_argument("--out", required=True, type=Path, help="folder to create for the converted files")
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty --out folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # before importing torch, so --help and usage errors are immediate
    try:
        check_out(args.out, args.force)
        from distgan.models.official_pickle import read_official_pickle
        from distgan.models.stylegan2 import config_from_official

        snapshot = read_official_pickle(args.pkl)
        G_kwargs, D_kwargs = keyword_only(snapshot.G, "G"), keyword_only(snapshot.D, "D")
        keys = config_from_official(G_kwargs, D_kwargs)
        config = {
            "G_kwargs": G_kwargs,
            "D_kwargs": D_kwargs,
            "training_set_kwargs": snapshot.training_set_kwargs,
            "augment_p": snapshot.augment_p,
            "source": {"file": snapshot.path.name, "sha256": snapshot.sha256},
            "distgan": keys,
        }
        tensors = {key: getattr(snapshot, key).state_dict for key in ("G", "D", "G_ema")}
        write_atomically(args.out, tensors, config)
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    counts = ", ".join(f"{key} {len(sd)} tensors" for key, sd in tensors.items())
    print(f"wrote {args.out} ({counts}) from {args.pkl} (sha256 {snapshot.sha256})")
    overrides = [f"model.{k}={v}" for k, v in keys["model"].items() if k != "family" and v is not None]
    overrides += [f"data.{k}={v}" for k, v in keys["data"].items()]
    print(f"train from it with: model.init_from={args.out} {' '.join(overrides)}")
    return 0


def check_out(out: Path, force: bool) -> None:
    """Refuse what the final rename would clobber, before the (possibly long) read."""
    if out.exists() and not out.is_dir():
        raise DistganError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DistganError(f"--out {out}: exists and is not empty; pass --force to replace it")


def keyword_only(network, key: str) -> dict:
    """The recorded constructor kwargs; config.json has no place for positional ones (official nets use none)."""
    if network.init_args:
        raise DistganError(f"{key}: was constructed with positional arguments, which config.json cannot record")
    return network.init_kwargs


def write_atomically(out: Path, tensors: dict, config: dict) -> None:
    """Write everything into a temporary folder beside `out`, then rename it to `out` (replacing an old one)."""
    import torch
    from safetensors.torch import save_file

    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as e:
        raise DistganError(f"--out {out}: cannot create a folder beside it ({e.strerror or e})") from None
    try:
        for key, state_dict in tensors.items():
            # safetensors wants contiguous tensors that share no memory: one dense copy each
            dense = {name: t.detach().clone(memory_format=torch.contiguous_format) for name, t in state_dict.items()}
            save_file(dense, str(tmp / f"{key}.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp (and safetensors for its files) use owner-only modes
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~umask)
            with open(file, "rb") as f:  # on disk before the rename makes them visible
                os.fsync(f.fileno())
        replace_folder(tmp, out)
    except OSError as e:
        raise DistganError(f"--out {out}: cannot write ({e.strerror or e}); nothing was replaced") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def replace_folder(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` (empty, or allowed by --force) is moved aside first, then removed."""
    if not out.exists() or not any(out.iterdir()):
        os.replace(tmp, out)  # rename(2) replaces an empty folder in one step
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=tmp.parent))
    os.replace(out, old)  # onto the empty placeholder
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)  # put the previous conversion back
        raise
    shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
