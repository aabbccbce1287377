"""FID, KID, IS and precision/recall from features, computed as torch-fidelity 0.4 computes them.

Each function follows torch-fidelity's metric_fid / metric_kid / metric_isc / metric_prc (same formulas,
same seeded draws: KID subsets and IS splits come from `np.random.RandomState(2020)`, its `rng_seed`), so
the same features give the same numbers. FID statistics and IS are float64; KID is float32, as torch-fidelity.
FID's matrix square root uses the symmetric eigendecomposition (faster; equal to torch-fidelity's `eigvals`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

RNG_SEED = 2020  # torch-fidelity's default rng_seed: KID subsets and IS shuffling


def fid_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, sqrt_sigma2: np.ndarray | None = None
) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), all in float64.

    tr sqrt(S1 S2) is the sum of the square roots of the eigenvalues of S1 S2, which are those of the
    symmetric R S1 R with R = sqrt(S2): `eigh` + `eigvalsh` are faster than torch-fidelity's `eigvals` of
    the non-symmetric product and give the same number (docs/metrics.md). Pass `sqrt_sigma2` (from
    `sqrt_psd(sigma2)`) to reuse the root of a fixed reference across evaluations: `eigvalsh` alone is left.
    """
    diff = mu1 - mu2
    root = sqrt_psd(sigma2) if sqrt_sigma2 is None else sqrt_sigma2
    middle = root @ sigma1 @ root
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrise away the matmuls' rounding
    tr_covmean = np.sum(np.sqrt(np.clip(eigenvalues, 0, None)))  # PSD: negatives are rounding noise
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance matrix, through `eigh` in float64 (tiny negative eigenvalues,
    rounding noise of a singular covariance, count as 0)."""
    w, v = np.linalg.eigh(sigma.astype(np.float64))
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def stats_from_sums(total: Tensor, outer: Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, unbiased covariance) in float64 from the feature sum (D,) and sum of outer products (D, D)."""
    mu = total.double() / n
    sigma = (outer.double() - n * torch.outer(mu, mu)) / (n - 1)
    return mu.cpu().numpy(), sigma.cpu().numpy()


def kid(
    f1: Tensor, f2: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = RNG_SEED
) -> tuple[float, float, int]:
    """(mean, std, subset size used) of the unbiased MMD^2 with the cubic polynomial kernel over random subsets.

    In float32 with torch-fidelity's operations in its order: KID is a small difference of large kernel
    sums, so float64 would move it in the fourth digit away from the reference numbers. The subset size
    shrinks to the smaller set when there are fewer samples (torch-fidelity refuses instead).
    """
    x, y = f1.cpu().float().numpy(), f2.cpu().float().numpy()
    m = min(subset_size, len(x), len(y))
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        mmds[i] = _mmd2_poly(a, b)
    return float(np.mean(mmds)), float(np.std(mmds)), m


def _mmd2_poly(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 (degree 3, gamma 1/d, coef0 1), as metric_kid.mmd2."""
    m, gamma = len(x), 1.0 / x.shape[1]
    k_xx = (np.matmul(x, x.T) * gamma + 1) ** 3
    k_yy = (np.matmul(y, y.T) * gamma + 1) ** 3
    k_xy = (np.matmul(x, y.T) * gamma + 1) ** 3
    sum_xx = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()
    sum_yy = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
    sum_xy = k_xy.sum(axis=0).sum()
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * sum_xy / (m * m))


def inception_score(logits: Tensor, splits: int = 10, seed: int = RNG_SEED) -> tuple[float, float]:
    """(mean, std) over `splits` of exp(E KL(p(y|x) || p(y))), after torch-fidelity's seeded shuffle."""
    n = logits.shape[0]
    logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))].double()
    p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part, log_part = p[i * n // splits : (i + 1) * n // splits], log_p[i * n // splits : (i + 1) * n // splits]
        q = part.mean(dim=0, keepdim=True)
        scores.append((part * (log_part - q.log())).sum(dim=1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall(fake: Tensor, real: Tensor, k: int = 3, batch_size: int = 10000) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al.) with k-NN balls, as torch-fidelity's `prc`.

    Precision: share of generated samples inside some real sample's ball (radius: its k-th nearest real
    neighbour); recall: share of real samples inside some generated sample's ball. Computed in blocks of
    `batch_size` rows with the same torch.cdist calls as torch-fidelity, so it fits in memory at 50k.
    """
    radius_fake = _kth_neighbour(fake, k, batch_size)
    radius_real = _kth_neighbour(real, k, batch_size)
    recall = torch.cat([(_cdist(b, fake, batch_size) <= radius_fake).any(dim=1) for b in real.split(batch_size)])
    precision = torch.cat([(_cdist(b, real, batch_size) <= radius_real).any(dim=1) for b in fake.split(batch_size)])
    return precision.float().mean().item(), recall.float().mean().item()


def _cdist(rows: Tensor, cols: Tensor, batch_size: int) -> Tensor:
    return torch.cat([torch.cdist(rows, b) for b in cols.split(batch_size)], dim=1)


def _kth_neighbour(x: Tensor, k: int, batch_size: int) -> Tensor:
    """Distance of each row to its k-th nearest other row (the (k+1)-th smallest, itself at 0 included)."""
    return torch.cat([_cdist(b, x, batch_size).kthvalue(k + 1).values for b in x.split(batch_size)])
