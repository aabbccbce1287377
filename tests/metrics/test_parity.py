"""distgan's FID, KID, IS and precision/recall equal torch-fidelity 0.4's on the same folders and weights file."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch_fidelity

from tests.conftest import assert_ok, run
from tests.metrics.helpers import digit_images, write_folder, write_random_inception_weights

N = 16  # images per folder: Inception at 299x299 runs at a few images/s on a shared CPU
KID_SUBSET = 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    weights = write_random_inception_weights(root / "inception_random.pth", seed=0)
    real = write_folder(root / "real", digit_images(N, 32))
    g = np.random.default_rng(0)
    noise = [g.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(N // 2)]  # far from the digits
    fake = write_folder(root / "fake", digit_images(N // 2, 24, offset=500, noise=0.15) + noise)  # another size
    return weights, real, fake


def test_evaluate_folders_equals_torch_fidelity(folders, tmp_path):
    weights, real, fake = folders
    out = tmp_path / "metrics.json"
    result = run(
        [sys.executable, "launch/evaluate.py", "--real", str(real), "--fake", str(fake), "--metrics", "fid,kid,is,pr",
         "--inception-weights", str(weights), "--kid-subset-size", str(KID_SUBSET), "--out", str(out)],
        timeout=600,
        env={"TORCH_HOME": str(tmp_path / "torch_home"), "DISTGAN_OFFLINE": "1"},
    )  # fmt: skip
    assert_ok(result)
    ours = json.loads(result.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == ours
    assert ours["extractor"] == "inception" and ours["num_fake"] == N and ours["num_real"] == N
    ref = torch_fidelity.calculate_metrics(
        input1=str(fake), input2=str(real), cuda=False, isc=True, fid=True, kid=True, prc=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        kid_subset_size=KID_SUBSET, cache=False, verbose=False, save_cpu_ram=True,
    )  # fmt: skip
    pairs = {
        "fid": "frechet_inception_distance",
        "kid_mean": "kernel_inception_distance_mean",
        "kid_std": "kernel_inception_distance_std",
        "precision": "precision",
        "recall": "recall",
    }
    for key, ref_key in pairs.items():
        assert ours[key] == pytest.approx(ref[ref_key], rel=1e-4, abs=1e-12), key
    assert ours["is_mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-3)
    assert ours["is_std"] == pytest.approx(ref["inception_score_std"], rel=1e-3, abs=1e-6)
    assert ours["fid"] > 1  # the two folders differ: the comparison above is not 0 == 0
    assert 0 < ours["precision"] < 1  # half of the fake images are noise: not a trivial 1 == 1
    pairs |= {"is_mean": "inception_score_mean", "is_std": "inception_score_std"}
    print("parity", {k: (ours[k], ref[v]) for k, v in pairs.items()}, ours["images_per_s"], "images/s")
