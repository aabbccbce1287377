"""Train a GAN: `accelerate launch launch/train.py --config dcgan_faces [key=value ...]`.

Everything that can be wrong with the input (config keys, data path, hub access, checkpoint) is checked
before the process group starts, and reported as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from distgan.config import MAX_PARAMS, REPO_ROOT, dump_config, load_config  # noqa: E402
from distgan.errors import (  # noqa: E402
    EXIT_PEER_FAILED,
    EXIT_PREEMPTED,
    ConfigError,
    DistganError,
    PeerFailed,
    exit_process,
)
from distgan.train.signals import StopSignals  # noqa: E402  (imports nothing heavy)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a name in configs/ (dcgan_faces) or a YAML path")
    parser.add_argument("--output-dir", help="run directory (default: runs/<config name>)")
    parser.add_argument("--resume", help="'latest' (newest checkpoint of --output-dir) or a checkpoint folder")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and derived numbers, then exit"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.batch_size=256")
    return parser.parse_intermixed_args(argv)  # overrides may come before or after the options


def main(argv: list[str] | None = None) -> int:
    signals = StopSignals()  # first: a preemption during start-up (imports, data, models) must not kill us
    args = parse_args(argv)
    try:
        from distgan.logging.trackers import check_wandb

        cfg = load_config(args.config, args.overrides)
        check_wandb(cfg.log.wandb)
        from distgan.train.loop import prepare, train  # after the config checks: a typo is reported without delay

        run_dir = Path(args.output_dir) if args.output_dir else REPO_ROOT / "runs" / cfg.name
        world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
        prepared = prepare(cfg, run_dir, args.resume, world_size)
        derived = describe_unallocated(prepared, world_size)
        if args.dry_run:
            print(dump_config(cfg), end="")
            print("# derived:", json.dumps(derived, indent=2))
            return 0
        result = train(prepared, run_dir, signals)
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    except RuntimeError as e:  # a collective that failed because another process died or hung
        if not is_peer_failure(e):
            raise
        print(f"error: {PeerFailed.describe(e)}", file=sys.stderr)
        return EXIT_PEER_FAILED
    return EXIT_PREEMPTED if result["stopped_by"] not in (None, "time") else 0


def describe_unallocated(prepared, world_size: int) -> dict:
    """The derived numbers, with the networks built on the meta device (counted, never allocated).

    Refuses networks too large to train, before anything is allocated or any process group started.
    """
    import torch

    from distgan.train.loop import describe

    try:
        with torch.device("meta"):
            derived = describe(prepared, world_size)
    except RuntimeError as e:  # sizes beyond int64: "Storage size calculation overflowed", "Overflow when unpacking"
        if "overflow" not in str(e).lower():
            raise
        raise ConfigError(
            f"model: the networks' sizes overflow ({str(e).splitlines()[0][:120]}); lower the model.* "
            "widths or data.image_size"
        ) from None
    total = derived["params_G"] + derived["params_D"]
    if total > MAX_PARAMS:
        raise ConfigError(
            f"model: G and D have {total:.3g} parameters together (at most {MAX_PARAMS:.0e} can be trained); "
            "lower the model.* widths or data.image_size"
        )
    return derived


def is_peer_failure(e: BaseException) -> bool:
    """Errors raised by gloo/NCCL when a peer is gone or silent (not bugs in our code)."""
    text = str(e)
    markers = (
        "Connection closed by peer",
        "Connection reset by peer",
        "Timed out",
        "timed out",
        "NCCL error",
        "Broken pipe",
        "DistBackendError",
        "ProcessGroupGloo",
    )
    return type(e).__name__ == "DistBackendError" or any(m in text for m in markers)


def report_unexpected(e: Exception) -> int:
    """Status 1 for what is neither bad input nor a signal: a full disk or out of memory in one `error:` line, any
    other exception (a bug) as its traceback and then one. The process then exits at once: DataLoader workers,
    which ignore SIGTERM, are killed at exit (distgan.data.stream.kill_workers), so nothing waits for them."""
    if isinstance(e, MemoryError):
        print("error: out of memory (MemoryError); lower train.batch_size or data.image_size", file=sys.stderr)
    elif isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or "No space left" in str(e):
        print(f"error: {e}; free disk space or choose another --output-dir", file=sys.stderr)
    else:
        import traceback

        traceback.print_exception(e)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"error: unexpected {type(e).__name__} (traceback above): {first}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        status = main()
    except Exception as e:  # whatever fails, the run ends now with a last line saying why: never a hang
        status = report_unexpected(e)
    exit_process(status)  # sys.exit's work without interpreter teardown, which gloo can abort
