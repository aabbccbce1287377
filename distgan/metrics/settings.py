"""What evaluation computes (the training config's `eval:` section maps onto `EvalSettings`); imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

from distgan.errors import DistganError

METRICS = ("fid", "kid", "is", "pr", "acc", "fid_per_class", "l1")
LOWER_IS_BETTER = {"fid": True, "kid_mean": True, "l1": True, "is_mean": False, "precision": False}
LOWER_IS_BETTER |= {"recall": False, "accuracy": False}
# what each metric adds to the results (the keys logged as eval/<key> and usable as checkpoint.best)
METRICS_KEYS = {
    "fid": ("fid",),
    "kid": ("kid_mean", "kid_std"),
    "is": ("is_mean", "is_std"),
    "pr": ("precision", "recall"),
}
METRICS_KEYS |= {"acc": ("accuracy",), "fid_per_class": (), "l1": ("l1",)}


@dataclass
class EvalSettings:
    """What to compute and how (the training config's `eval:` section maps onto this)."""

    metrics: tuple[str, ...] = ("fid",)
    num_samples: int = 50000  # generated images (image-to-image: at most the rows of the split)
    num_real: int | None = None  # real images: the first num_real of the split in stream order; None: all
    features: str = "inception"  # or classifier:PATH
    inception_weights: str | None = None  # explicit state_dict file; None: torch hub cache / download
    batch_size: int = 64  # images per forward pass per process (also the chunk of indices a rank owns)
    seed: int = 0  # generated inputs: sample i's noise/labels from (seed, i)
    split: str | None = None  # split of the real data (held-out sources for image-to-image); None: data.split
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    isc_splits: int = 10
    pr_neighborhood: int = 3
    cache_dir: str | None = None  # reference statistics; None: $DISTGAN_CACHE or ~/.cache/distgan/reference

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise DistganError(f"--metrics: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}")
        for key in ("num_samples", "batch_size", "kid_subsets", "kid_subset_size", "isc_splits", "pr_neighborhood"):
            if getattr(self, key) < 1:
                raise DistganError(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(self, key)}")
        if self.num_real is not None and self.num_real < 2:
            raise DistganError(f"--num-real: must be >= 2, got {self.num_real}")
        if "acc" in self.metrics and not self.features.startswith("classifier:"):
            raise DistganError("--metrics acc: class accuracy needs a classifier: --features classifier:PATH")
