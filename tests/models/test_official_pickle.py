"""The allow-list reader of official stylegan2-ada-pytorch pickles: it reads what state_dict() would give, and
refuses (one line, nothing run) every global it does not know."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.errors import DistganError
from distgan.models.official_pickle import ALLOWED_GLOBALS, read_official_pickle
from tests.conftest import REPO
from tests.models.official_pickles import MALICIOUS, Call, EasyDict, Record, dumps, malicious_pickles, snapshot_of

SHARED = REPO.parent / "shared" / "stylegan2" / "small_uncond"


class Block(torch.nn.Module):
    """Parameters, a persistent and a non-persistent buffer, a None parameter and a None submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 2))
        self.register_parameter("bias", None)
        self.register_buffer("resample_filter", torch.arange(4.0).reshape(2, 2))
        self.register_buffer("scratch", torch.zeros(5), persistent=False)
        self.inner = torch.nn.Linear(2, 3)
        self.missing = None


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.randn(4, dtype=torch.float64))
        self.b4 = Block()
        self.view_of = torch.nn.Parameter(torch.randn(6, 4).t())  # non-contiguous: strides must survive


def write(tmp_path: Path, data: bytes, name: str = "snapshot.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_refused(path: Path, *words: str) -> str:
    with pytest.raises(DistganError) as info:
        read_official_pickle(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "nothing from the pickle was executed" in message
    for word in words:
        assert word in message
    return message


def test_state_dict_names_order_and_values_match_torch(tmp_path):
    torch.manual_seed(0)
    G, D = Net(), Block()
    snapshot = read_official_pickle(write(tmp_path, dumps(snapshot_of(G, D))))
    for network, module in ((snapshot.G, G), (snapshot.D, D), (snapshot.G_ema, G)):
        expected = module.state_dict()
        assert list(network.state_dict) == list(expected)  # order too; skips None and the non-persistent buffer
        for name, tensor in expected.items():
            got = network.state_dict[name]
            assert got.dtype == tensor.dtype and got.stride() == tensor.stride() and torch.equal(got, tensor)
            assert not got.requires_grad
        assert network.parameter_names == tuple(name for name, _ in module.named_parameters())
    assert snapshot.G.class_name == "Generator" and snapshot.D.class_name == "Discriminator"


def test_kwargs_are_plain_python(tmp_path):
    G = Net()
    pipe = Record(Block(), "AugmentPipe", {"xflip": 1, "rotate90": 1})
    pipe.meta["state"]["_buffers"] = {"p": torch.tensor(0.3)}
    kwargs = {"z_dim": 4, "gain": np.float64(0.125), "k": np.int64(-3), "half": np.float32(0.5), "t": (1, [2])}
    data = dumps(snapshot_of(G, G, G=Record(G, "Generator", EasyDict(kwargs)), augment_pipe=pipe))
    snapshot = read_official_pickle(write(tmp_path, data))
    assert snapshot.G.init_kwargs == {"z_dim": 4, "gain": 0.125, "k": -3, "half": 0.5, "t": (1, [2])}
    assert type(snapshot.G.init_kwargs) is dict and type(snapshot.G.init_kwargs["gain"]) is float
    assert type(snapshot.G_ema.init_kwargs["mapping_kwargs"]) is dict  # an EasyDict, read as a plain dict
    assert snapshot.training_set_kwargs == {"path": "data.zip", "resolution": 8}
    assert snapshot.augment_p == 0.3 and snapshot.augment_kwargs == {"xflip": 1, "rotate90": 1}  # not 0.30000001


@pytest.mark.parametrize("kind", MALICIOUS)
def test_refuses_malicious_globals_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "MARKER"
    path = write(tmp_path, malicious_pickles(marker)[kind])
    message = assert_refused(path, "refused global")
    assert not marker.exists()
    expected = {"os.system": "posix.system", "builtins.exec": "builtins.exec", "getattr chain": "builtins.getattr"}
    assert expected.get(kind, "builtins.eval") in message


def test_refuses_plain_torch_modules(tmp_path):
    # a non-persistent nn.Module would be rebuilt by importing and instantiating its class: not on the list
    path = write(tmp_path, pickle.dumps({"G": torch.nn.Linear(2, 2)}))
    assert_refused(path, "torch.nn.modules.linear.Linear")


def test_refuses_persistent_ids(tmp_path):
    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "x") if isinstance(obj, Call) else None

    path = tmp_path / "ids.pkl"
    with open(path, "wb") as f:
        WithIds(f, protocol=4).dump({"G": Call(print)})
    assert_refused(path, "refused persistent id")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "EOFError"),
        (b"# not a pickle\n", "invalid load key"),
        (dumps(snapshot_of(Net(), Block()))[:5000], "not a readable official pickle"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_damaged_files_are_one_line_errors(tmp_path, data, words):
    assert_refused(write(tmp_path, data), words)


def test_missing_network_and_wrong_root(tmp_path):
    G = Net()
    snapshot = snapshot_of(G, G)
    del snapshot["D"]
    with pytest.raises(DistganError, match="has no persistent network 'D'"):
        read_official_pickle(write(tmp_path, dumps(snapshot)))
    with pytest.raises(DistganError, match="holds a list"):
        read_official_pickle(write(tmp_path, dumps([1, 2])))


def test_allow_list_is_small_and_never_builtins():
    assert all(not module.startswith("builtins") for module, _ in ALLOWED_GLOBALS)
    assert len(ALLOWED_GLOBALS) <= 9


@pytest.mark.skipif(not (SHARED / "network-snapshot.pkl").is_file(), reason=f"no shared reference data at {SHARED}")
def test_reads_the_shared_official_snapshot():
    snapshot = read_official_pickle(SHARED / "network-snapshot.pkl")
    assert snapshot.augment_p == 0.2 and snapshot.augment_kwargs["xflip"] == 1
    assert snapshot.training_set_kwargs["resolution"] == 32
    assert snapshot.G_ema.init_kwargs == snapshot.G.init_kwargs and snapshot.G.init_args == ()
    assert "mapping.w_avg" in snapshot.G.state_dict and "mapping.w_avg" not in snapshot.G.parameter_names
