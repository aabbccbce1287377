"""The metric math on features: torch-fidelity's functions give the same numbers; the edge cases are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from distgan.metrics import scores

KID_KW = dict(kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)


def features(n: int, shift: float = 0.0, seed: int = 0, dim: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, dim, generator=g) + shift)


def test_fid_from_sums_equals_torch_fidelity():
    a, b = features(300), features(250, shift=0.3, seed=1)
    mu_a, sig_a = scores.stats_from_sums(a.double().sum(0), a.double().T @ a.double(), len(a))
    mu_b, sig_b = scores.stats_from_sums(b.double().sum(0), b.double().T @ b.double(), len(b))
    ref = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), False)
    assert scores.fid_from_stats(mu_a, sig_a, mu_b, sig_b) == pytest.approx(ref["frechet_inception_distance"], 1e-6)
    assert abs(scores.fid_from_stats(mu_a, sig_a, mu_a, sig_a)) < 1e-6  # a set against itself
    root = scores.sqrt_psd(sig_b)  # a reference's root computed once gives the same number
    assert scores.fid_from_stats(mu_a, sig_a, mu_b, sig_b, root) == scores.fid_from_stats(mu_a, sig_a, mu_b, sig_b)


def test_fid_of_singular_covariances_equals_torch_fidelity():
    # fewer samples than dimensions (a small in-training evaluation): both covariances are singular, their
    # zero eigenvalues come out as tiny negatives, which the symmetric formulation clamps to 0
    a, b = features(40), features(30, shift=0.3, seed=1)
    stats = [fid_features_to_statistics(x) for x in (a, b)]
    ref = fid_statistics_to_metric(*stats, False)["frechet_inception_distance"]
    assert np.linalg.eigvalsh(stats[1]["sigma"]).min() < 0  # the case this test is about
    ours = scores.fid_from_stats(stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"])
    assert ours == pytest.approx(ref, rel=1e-6)


def test_kid_is_pr_equal_torch_fidelity():
    a, b = features(120), features(100, shift=0.1, seed=1)
    ref = kid_features_to_metric(a, b, kid_subsets=100, kid_subset_size=50, rng_seed=2020, verbose=False, **KID_KW)
    mean, std, m = scores.kid(a, b, 100, 50)
    assert (mean, std, m) == (ref["kernel_inception_distance_mean"], ref["kernel_inception_distance_std"], 50)
    assert scores.kid(a, b, 10, 1000)[2] == 100  # fewer samples than the subset size: the smaller set
    logits = torch.randn(130, 1008, generator=torch.Generator().manual_seed(2)) * 3
    ref = isc_features_to_metric(logits, 10, True, 2020)
    assert scores.inception_score(logits, 10) == (ref["inception_score_mean"], ref["inception_score_std"])
    ref = prc_features_to_metric(a, b, prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    assert scores.precision_recall(a, b, 3) == (ref["precision"], ref["recall"])
    assert scores.precision_recall(a, b, 3, batch_size=7) == (ref["precision"], ref["recall"])  # blocked: same


def test_precision_recall_identical_and_far_apart():
    a = features(80)
    assert scores.precision_recall(a, a.clone()) == (1.0, 1.0)
    assert scores.precision_recall(a, a + 100.0) == (0.0, 0.0)


def test_inception_score_extremes():
    confident = torch.eye(10).repeat(10, 1) * 50  # 100 images, each of one class, all classes equally often
    assert scores.inception_score(confident, 1)[0] == pytest.approx(10, rel=1e-6)
    assert scores.inception_score(torch.zeros(100, 10), 10)[0] == pytest.approx(1.0)
    assert np.isfinite(scores.kid(features(20), features(20, seed=3), 5, 10)[0])
