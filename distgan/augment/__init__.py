"""Augmentations of what D sees (real and generated images alike), differentiable so that G learns through them."""

from distgan.augment.diffaugment import POLICIES, apply, diff_augment, parse_policy, sample_params, slice_params

__all__ = ["POLICIES", "apply", "diff_augment", "parse_policy", "sample_params", "slice_params"]
