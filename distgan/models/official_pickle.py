"""Read NVIDIA's stylegan2-ada-pytorch network pickles without executing anything stored in them.

An official snapshot (`network-snapshot-*.pkl`) is a plain pickle of a dict {training_set_kwargs, G, D, G_ema,
augment_pipe}. The networks are `torch_utils.persistence` objects: each pickles as a call of
`torch_utils.persistence._reconstruct_persistent_obj(meta)` where `meta` is a dict {type: 'class', version,
module_src (the Python source of the module defining the class), class_name, state (the object's __dict__)}.
Unpickling it the official way `exec`s `module_src`, so an untrusted pickle runs arbitrary code.

Here a restricted unpickler resolves only an explicit allow-list of globals (`ALLOWED_GLOBALS`), each mapped to
a function of ours: the persistence call just returns its meta dict (the source is never compiled), tensors are
rebuilt from storages loaded with `torch.load(weights_only=True)`, numpy scalars are decoded from their bytes
with `struct`. Any other global, or any persistent id, is refused before anything is called. Parameters and
buffers are then read out of the recorded module state in `nn.Module.state_dict()` order.

    snapshot = read_official_pickle("network-snapshot-000800.pkl")
    snapshot.G_ema.init_kwargs["z_dim"], snapshot.G_ema.state_dict["mapping.w_avg"]
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distgan.errors import DistganError

PERSISTENCE_VERSION = 6  # torch_utils.persistence._version of stylegan2-ada-pytorch (and stylegan3)
NETWORK_KEYS = ("G", "D", "G_ema")


@dataclass(frozen=True)
class OfficialNetwork:
    """One persistent network of an official pickle, as recorded (nothing of it was constructed).

    class_name: the official class, e.g. 'Generator' / 'Discriminator'.
    init_args / init_kwargs: the constructor arguments recorded by the persistence decorator (the official
        networks are built from keywords only, so init_args is normally empty); plain dicts, lists, tuples,
        str, int, float, bool, None.
    state_dict: name -> tensor for every parameter and persistent buffer, named and ordered exactly as the
        constructed module's `state_dict()` would (CPU tensors, dtype as stored).
    parameter_names: which of those names are parameters (the others are buffers).
    """

    class_name: str
    init_args: tuple[Any, ...]
    init_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    parameter_names: tuple[str, ...]


@dataclass(frozen=True)
class OfficialSnapshot:
    """Everything `read_official_pickle` takes from an official snapshot pickle.

    path / sha256: the file read and the sha256 of its bytes.
    G, D, G_ema: the networks (`OfficialNetwork`).
    training_set_kwargs: the dataset kwargs recorded by the official training loop (None when absent).
    augment_p: the ADA augmentation probability (the augment pipe's `p` buffer); None without an augment pipe.
    augment_kwargs: the augment pipe's constructor kwargs; None without an augment pipe.
    """

    path: Path
    sha256: str
    G: OfficialNetwork
    D: OfficialNetwork
    G_ema: OfficialNetwork
    training_set_kwargs: dict[str, Any] | None
    augment_p: float | None
    augment_kwargs: dict[str, Any] | None


class PersistentRecord(dict):
    """The meta dict of one `torch_utils.persistence` object: what the pickle asked to reconstruct, unbuilt."""


class _EasyDict(dict):
    """Stands in for `dnnlib.util.EasyDict` (the official kwargs containers): a plain dict, nothing imported."""

    def __setstate__(self, state: Any) -> None:
        if state:  # an EasyDict keeps its items as dict items; attribute state would be something else
            raise TypeError(f"unexpected EasyDict state {type(state).__name__}")


class _NumpyDtype:
    """Stands in for `numpy.dtype` of a numeric scalar: just its struct code and byte order, numpy not imported."""

    _CODES = {"b1": "?", "i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q", "u8": "Q"}
    _CODES |= {"f2": "e", "f4": "f", "f8": "d"}

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str) or name not in self._CODES:
            raise TypeError(f"numpy dtype {name!r}: only numeric scalars are read")
        self.code, self.order = self._CODES[name], "<"

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byte order, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise TypeError(f"unexpected numpy dtype state {state!r}"[:200])
        if any(part is not None for part in state[2:5]):
            raise TypeError("numpy dtype with subarray or fields: only numeric scalars are read")
        self.order = {"|": "<", "=": "="}.get(state[1], state[1])


def _numpy_scalar(dtype: Any, data: Any) -> bool | int | float:
    """numpy's scalar reconstruction, as a Python number (what json and the kwargs need)."""
    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes):
        raise TypeError("numpy scalar: expected a numeric dtype and its bytes")
    fmt = dtype.order + dtype.code
    if len(data) != struct.calcsize(fmt):
        raise TypeError(f"numpy scalar: {len(data)} bytes for a {struct.calcsize(fmt)}-byte dtype")
    return struct.unpack(fmt, data)[0]


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Replaces the official reconstruction (which execs meta['module_src']): keeps the meta dict, runs nothing."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise TypeError("persistence record: expected a meta dict of type 'class'")
    if meta.get("version") != PERSISTENCE_VERSION:
        raise TypeError(f"persistence record version {meta.get('version')!r}: only {PERSISTENCE_VERSION} is known")
    if not isinstance(meta.get("class_name"), str) or not isinstance(meta.get("state"), dict):
        raise TypeError("persistence record: expected a class_name string and a state dict")
    return PersistentRecord(meta)


def _load_storage(data: Any) -> torch.storage.TypedStorage | torch.UntypedStorage:
    """`torch.storage._load_from_bytes`, whose bytes are one storage in torch.save's format: loaded weights-only."""
    if not isinstance(data, bytes):
        raise TypeError("storage: expected bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "TypedStorage is deprecated": it is what the pickle holds
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise TypeError(f"storage: the bytes hold a {type(storage).__name__}")
    return storage


def _rebuild_tensor(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """`torch._utils._rebuild_tensor_v2` for the plain case only: arguments checked, no hooks, no metadata."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise TypeError("tensor: expected a storage")
    ints = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else (None,)
    if not all(type(v) is int for v in ints) or len(size) != len(stride):
        raise TypeError("tensor: expected an integer offset and integer size and stride tuples of one length")
    if backward_hooks or metadata:  # hooks would be callables; metadata sets tensor attributes: neither belongs
        raise TypeError("tensor: backward hooks or metadata are not read")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation, as above
        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    """`torch._utils._rebuild_parameter`, as the plain tensor: the caller knows it is a parameter by its place."""
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise TypeError("parameter: expected a tensor and no backward hooks")
    return data


def _ordered_dict(*args: Any) -> OrderedDict:
    """`collections.OrderedDict`; the modules' hook dicts are pickled as OrderedDict() calls."""
    return OrderedDict(*args)


# (module, name) as stored in the pickle -> what it resolves to. Nothing else is ever looked up.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): _ordered_dict,
    ("dnnlib.util", "EasyDict"): _EasyDict,  # the official train.py's kwargs containers
    ("numpy", "dtype"): _NumpyDtype,  # numpy floats in module attributes (e.g. weight_gain = np.sqrt(...))
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # numpy 1 pickles
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy 2 pickles
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED_GLOBALS and no persistent ids; refusals name the file and the global."""

    def __init__(self, file: io.BytesIO, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DistganError(
                f"{self._path}: refused global {module}.{name} (not on the allow-list of the official-pickle "
                "reader); nothing from the pickle was executed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DistganError(
            f"{self._path}: refused persistent id {str(pid)[:80]!r} (an official snapshot has none); "
            "nothing from the pickle was executed"
        )


def read_official_pickle(path: str | Path) -> OfficialSnapshot:
    """Read an official stylegan2-ada-pytorch snapshot pickle; raise DistganError (one line) if it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DistganError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    try:
        root = _RestrictedUnpickler(io.BytesIO(data), path).load()
    except DistganError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged pickles raise EOFError, UnpicklingError, ValueError, ...
        raise DistganError(
            f"{path}: not a readable official pickle ({_one_line(e)}); nothing from the pickle was executed"
        ) from None
    if not isinstance(root, dict):
        raise DistganError(f"{path}: holds a {type(root).__name__}, not an official snapshot dict")
    networks = {}
    for key in NETWORK_KEYS:
        if not isinstance(root.get(key), PersistentRecord):
            raise DistganError(f"{path}: has no persistent network '{key}' (keys: {', '.join(map(str, root))})")
        networks[key] = _network(root[key], f"{path}: {key}")
    augment_p, augment_kwargs = None, None
    pipe = root.get("augment_pipe")
    if isinstance(pipe, PersistentRecord):
        where = f"{path}: augment_pipe"
        p = _walk(pipe, where)[0].get("p")
        if p is None or p.numel() != 1:
            raise DistganError(f"{where} has no scalar buffer 'p'")
        augment_p, augment_kwargs = _shortest_float(p), _plain(pipe["state"].get("_init_kwargs", {}), where)
    elif pipe is not None:
        raise DistganError(f"{path}: augment_pipe is a {type(pipe).__name__}, not a persistent object")
    training_set_kwargs = root.get("training_set_kwargs")
    if training_set_kwargs is not None:
        training_set_kwargs = _plain(training_set_kwargs, f"{path}: training_set_kwargs")
    return OfficialSnapshot(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        training_set_kwargs=training_set_kwargs,
        augment_p=augment_p,
        augment_kwargs=augment_kwargs,
        **networks,
    )


def _network(record: PersistentRecord, where: str) -> OfficialNetwork:
    state_dict, parameter_names = _walk(record, where)
    state = record["state"]
    init_args, init_kwargs = state.get("_init_args", ()), state.get("_init_kwargs", {})
    if not isinstance(init_args, tuple) or not isinstance(init_kwargs, dict):
        raise DistganError(f"{where}: the recorded constructor arguments are not a tuple and a dict")
    return OfficialNetwork(
        class_name=record["class_name"],
        init_args=_plain(init_args, where),
        init_kwargs=_plain(init_kwargs, where),
        state_dict=state_dict,
        parameter_names=tuple(parameter_names),
    )


def _walk(record: PersistentRecord, where: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict, parameter names) of a recorded module, in `nn.Module.state_dict()` order.

    That order is: the module's own parameters, then its persistent buffers, then each submodule's, depth
    first, in insertion order; None entries are skipped, as state_dict skips them.
    """
    tensors: dict[str, torch.Tensor] = {}
    parameter_names: list[str] = []

    def visit(node: Any, prefix: str) -> None:
        state = node["state"] if isinstance(node, PersistentRecord) else None
        parts = [state.get(k) if state else None for k in ("_parameters", "_buffers", "_modules")]
        if not all(isinstance(part, dict) for part in parts):
            name = prefix.rstrip(".") or "the network"
            raise DistganError(f"{where}: {name} is not a recorded torch module (no _parameters/_buffers/_modules)")
        parameters, buffers, modules = parts
        skip = state.get("_non_persistent_buffers_set") or set()
        for kind, group in (("parameter", parameters), ("buffer", buffers)):
            for name, value in group.items():
                if value is None or (kind == "buffer" and name in skip):
                    continue
                if not isinstance(value, torch.Tensor):
                    raise DistganError(f"{where}: {kind} {prefix}{name} is a {type(value).__name__}, not a tensor")
                tensors[prefix + name] = value
                if kind == "parameter":
                    parameter_names.append(prefix + name)
        for name, child in modules.items():
            if child is not None:
                visit(child, f"{prefix}{name}.")

    visit(record, "")
    return tensors, parameter_names


def _plain(value: Any, where: str) -> Any:
    """Kwargs as plain Python (EasyDict -> dict); anything beyond JSON-like values and tuples is refused."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise DistganError(f"{where}: recorded kwargs have a non-string key")
        return {k: _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, where) for v in value]
        return items if isinstance(value, list) else tuple(items)
    raise DistganError(f"{where}: recorded kwargs hold a {type(value).__name__}; only plain values are read")


def _shortest_float(t: torch.Tensor) -> float:
    """A one-element tensor as the shortest decimal that gives back the same value in its own dtype.

    The official p is a float32 buffer: 0.2 rather than 0.20000000298023224, and float32(0.2) is that buffer.
    """
    value = float(t.item())
    if t.dtype != torch.float32:
        return value
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == struct.pack("<f", value):
            return candidate
    return value


def _one_line(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__
