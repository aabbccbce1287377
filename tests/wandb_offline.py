"""Read a W&B offline run dir (``offline-run-*``) with no network and no ``wandb sync``.

wandb 0.31 ships no Python reader for ``run-<id>.wandb`` (Go ``wandb-core`` writes it), so
the LevelDB-style framing is decoded here and records are parsed with wandb's own protobuf
``wandb_internal_pb2.Record``. Layout: header ``:W&B`` <H 0xBEE1> <B 0>, then 32 KiB blocks
of chunks ``<I crc32(type+data)> <H len> <B type>`` (1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST).
"""

from __future__ import annotations

import glob
import json
import os
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

_BLOCK, _HDR = 32768, 7


def _payloads(data: bytes) -> Iterator[bytes]:
    """Yield whole record payloads; stop quietly at a truncated or corrupt tail."""
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (bad magic)")
    pos, buf = _HDR, b""
    while pos + _HDR <= len(data):
        left = _BLOCK - pos % _BLOCK
        crc, n, kind = struct.unpack_from("<IHB", data, pos) if left >= _HDR else (0, 0, 0)
        if kind == 0 and n == 0:  # padding up to the end of the block
            pos += left
            continue
        body = data[pos + _HDR : pos + _HDR + n]
        if len(body) < n or zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            return  # crashed writer / partial flush: keep what was read so far
        pos += _HDR + n
        buf = body if kind in (1, 2) else buf + body
        if kind in (1, 4):
            yield buf


def _records(logs: list[str]) -> list[pb.Record]:
    out = []
    for log in logs:  # normally exactly one
        with open(log, "rb") as f:
            data = f.read()
        for raw in _payloads(data):
            rec = pb.Record()
            try:
                rec.ParseFromString(raw)
            except DecodeError:
                continue
            out.append(rec)
    return out


def _put(d: dict[str, Any], item: Any, value: Any, remove: bool = False) -> None:
    """Set/remove ``value`` at the ``item.nested_key`` (or ``item.key``) path of ``d``."""
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    if remove:
        d.pop(keys[-1], None)
    else:
        d[keys[-1]] = value


def read_offline_run(run_dir: str, wait_s: float = 0.0) -> dict[str, Any]:
    """Return ``{"history", "config", "run_id", "files", "exited"}`` for an offline run dir.

    One history row per ``history`` record (incl. ``_step``, ``_timestamp``, ``_runtime``),
    JSON-decoded (an integral float such as 2.0 comes back as int 2). Media values are the
    dicts W&B stores, e.g. ``{"_type": "image-file", "path": "media/images/..."}`` (path
    relative to ``<run_dir>/files``); ``files`` = absolute media paths found on disk.
    Config = ``run`` record's config + later ``config`` records (``_wandb`` dropped).
    ``run.finish()`` can return before wandb-core flushed the log: pass ``wait_s`` to
    re-read until the final ``exit`` record appears (or call ``wandb.teardown()`` first).
    """
    logs = sorted(glob.glob(os.path.join(run_dir, "run-*.wandb")))
    if not logs:
        raise FileNotFoundError(f"no run-*.wandb in {run_dir}")
    deadline = time.monotonic() + wait_s
    while True:
        recs = _records(logs)
        exited = any(r.WhichOneof("record_type") == "exit" for r in recs)
        if exited or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    history: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    run_id = os.path.basename(logs[0])[len("run-") : -len(".wandb")]
    for rec in recs:
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({})
            for it in rec.history.item:
                _put(history[-1], it, json.loads(it.value_json))
        elif kind in ("run", "config"):
            run_id = rec.run.run_id or run_id
            cfg = rec.run.config if kind == "run" else rec.config
            for it in cfg.update:
                _put(config, it, json.loads(it.value_json))
            for it in cfg.remove:
                _put(config, it, None, remove=True)
    config.pop("_wandb", None)
    media = glob.glob(os.path.join(run_dir, "files", "media", "**", "*"), recursive=True)
    files = sorted(p for p in media if os.path.isfile(p))
    return {"history": history, "config": config, "run_id": run_id, "files": files, "exited": exited}
