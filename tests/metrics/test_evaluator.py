"""The Evaluator with the (cheap) classifier extractor: sanity of the numbers, the cache, the weights error."""

from __future__ import annotations

import json

import pytest
import torch

from distgan.config import DataConfig
from distgan.errors import DistganError
from distgan.metrics import EvalSettings
from distgan.metrics import evaluator as evaluator_module
from distgan.metrics.classifier import ClassifierFeatures, accuracy, load_labelled
from distgan.metrics.evaluator import Evaluator
from distgan.metrics.inception import WEIGHTS_URL, resolve_inception_weights
from distgan.sampling import load_generator
from tests.metrics.helpers import digit_images, export_tiny_generator, tiny_classifier, write_folder


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, digits):
    return tiny_classifier(tmp_path_factory, digits)


def test_class_accuracy_of_real_images_is_the_test_accuracy(classifier, digits):
    cfg = json.loads((classifier / "config.json").read_text())
    images, labels, _ = load_labelled(DataConfig(path=str(digits), image_size=16, channels=1, num_workers=0))
    test = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[: round(0.1 * len(images))]
    extractor = ClassifierFeatures(classifier)
    assert accuracy(extractor, images[test], labels[test]) == pytest.approx(cfg["test_accuracy"])
    assert accuracy(extractor, images, labels) >= cfg["test_accuracy"] - 0.1  # all real digits: about as good
    assert cfg["test_accuracy"] > 0.8  # far above chance (0.1): the features mean something


def test_fid_and_pr_sanity_on_folders(classifier, tmp_path):
    half_a = write_folder(tmp_path / "a", digit_images(600, 16))
    half_b = write_folder(tmp_path / "b", digit_images(600, 16, offset=600))
    g = torch.Generator().manual_seed(0)
    noise = write_folder(tmp_path / "noise", [torch.randint(0, 256, (16, 16), generator=g).byte().numpy()] * 1)
    write_folder(tmp_path / "noise", [torch.randint(0, 256, (16, 16), generator=g).byte().numpy() for _ in range(300)])
    ev = Evaluator(EvalSettings(metrics=("fid", "pr"), features=f"classifier:{classifier}"), None, None)
    same = ev.score_folders(half_a, half_a)
    halves = ev.score_folders(half_b, half_a)
    far = ev.score_folders(noise, half_a)
    # a set against itself: 0 up to the matrix square root's rounding (~1e-6 of the features' scale)
    assert abs(same["fid"]) < 1e-5 and (same["precision"], same["recall"]) == (1.0, 1.0)
    assert 0 < halves["fid"] < 0.1 * far["fid"]
    assert far["precision"] < 0.05 and far["recall"] < 0.05


def test_reference_cache_hit_and_miss(classifier, digits, tmp_path, monkeypatch):
    family, G = load_generator(export_tiny_generator(tmp_path / "gen", z_dim=8, ngf=8, ndf=8))
    data = DataConfig(path=str(digits), image_size=16, channels=1, num_workers=0)
    settings = EvalSettings(metrics=("fid", "kid"), num_samples=100, features=f"classifier:{classifier}")
    settings.cache_dir, settings.batch_size = str(tmp_path / "cache"), 32
    first = Evaluator(settings, family, data).evaluate(G)
    assert first["num_real"] == 1797 and len(list((tmp_path / "cache").glob("*.json"))) == 1

    def no_reading(*args, **kwargs):
        raise AssertionError("real data read again despite the cache")

    with monkeypatch.context() as m:
        m.setattr(evaluator_module, "iter_real", no_reading)
        assert Evaluator(settings, family, data).evaluate(G) == first  # hit: the same numbers, no data read
        settings.num_real = 500  # another key: recomputed
        with pytest.raises(AssertionError, match="read again"):
            Evaluator(settings, family, data).evaluate(G)
    smaller = Evaluator(settings, family, data).evaluate(G)
    assert smaller["num_real"] == 500 and smaller["fid"] != first["fid"]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_missing_inception_weights_is_one_line_with_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("DISTGAN_OFFLINE", "1")
    with pytest.raises(DistganError) as e:
        resolve_inception_weights(None)
    message = str(e.value)
    assert WEIGHTS_URL in message and str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert "\n" not in message and not (tmp_path / "torch_home").exists()  # nothing written
    with pytest.raises(DistganError, match="no such file"):
        resolve_inception_weights(tmp_path / "missing.pth")
