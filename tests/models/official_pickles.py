"""Builders of official-format (stylegan2-ada-pytorch) pickles for tests: honest ones and planted malicious ones.

Everything here only *writes* pickles (pickling runs no `__reduce__` result); the reader under test must never
run what they ask for. A persistence record pickles as the official one does: a call of
`torch_utils.persistence._reconstruct_persistent_obj(meta)`; `fake_persistence()` provides a stand-in module of
that name for the pickler to reference (its function raises if anything ever calls it).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

RAISING_SOURCE = "raise RuntimeError('source omitted: this pickle must never be executed')\n"


def _never_called(meta: Any) -> Any:
    raise AssertionError("the official reconstruction was called: the reader executed the pickle")


@contextlib.contextmanager
def fake_persistence() -> Iterator[None]:
    """`torch_utils.persistence` and `dnnlib.util` in sys.modules while pickling, so the globals get their names."""
    persistence = types.ModuleType("torch_utils.persistence")
    _never_called.__module__, _never_called.__qualname__ = "torch_utils.persistence", "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _never_called
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    fakes = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class EasyDict(dict):
    """Pickles as `dnnlib.util.EasyDict` (inside `fake_persistence()`), like the official kwargs containers."""


EasyDict.__module__ = "dnnlib.util"


class Record:
    """Pickles as a persistence record of `module`: its __dict__ as state, submodules as records too."""

    def __init__(self, module: torch.nn.Module, class_name: str, init_kwargs: dict | None = None, **extra: Any):
        state = dict(module.__dict__)
        state["_modules"] = {
            name: None if child is None else Record(child, type(child).__name__)
            for name, child in module._modules.items()
        }
        state.update(_init_args=(), _init_kwargs=init_kwargs or {}, **extra)
        self.meta = dict(type="class", version=6, module_src=RAISING_SOURCE, class_name=class_name, state=state)

    def __reduce__(self) -> tuple:
        return (_never_called, (self.meta,))


class Call:
    """Pickles as `func(*args)`: how a malicious pickle makes the unpickler call something."""

    def __init__(self, func: Any, *args: Any):
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)

    def __call__(self, *args: Any) -> Any:  # pickle wants a callable as the function of a call
        raise AssertionError("only pickled, never called")


def dumps(obj: Any) -> bytes:
    with fake_persistence():
        return pickle.dumps(obj, protocol=4)


def snapshot_of(generator: torch.nn.Module, discriminator: torch.nn.Module, **extra: Any) -> dict:
    """An official-layout snapshot dict of records (G_ema = G), with `extra` entries added or replaced."""
    snapshot = {
        "training_set_kwargs": EasyDict(path="data.zip", resolution=8),
        "G": Record(generator, "Generator", EasyDict(z_dim=4, mapping_kwargs=EasyDict(num_layers=2))),
        "D": Record(discriminator, "Discriminator", {"c_dim": 0}),
        "G_ema": Record(generator, "Generator", EasyDict(z_dim=4, mapping_kwargs=EasyDict(num_layers=2))),
        "augment_pipe": None,
    }
    return {**snapshot, **extra}


MALICIOUS = (
    "os.system",
    "builtins.exec",
    "builtins.eval in a persistence record",
    "eval as the persistence call",
    "getattr chain",
)


def malicious_pickles(marker: Path) -> dict[str, bytes]:
    """MALICIOUS name -> pickle bytes that would create `marker` if anything in them ran."""
    touch = f"open({str(marker)!r}, 'w').close()"
    G = torch.nn.Linear(2, 2)
    eval_record = Record(G, "Generator", {"z_dim": 4}, evil=Call(builtins.eval, touch))  # inside a record's state
    return {
        "os.system": dumps(Call(os.system, f"touch {marker}")),
        "builtins.exec": dumps({"G": Call(builtins.exec, touch)}),
        "builtins.eval in a persistence record": dumps(snapshot_of(G, G, D=eval_record)),
        "eval as the persistence call": dumps({"G": Call(builtins.eval, touch)}),
        "getattr chain": dumps(Call(Call(getattr, Call(builtins.__import__, "os"), "system"), f"touch {marker}")),
    }
