"""DiffAugment: each policy does what the paper says, a pair gets one transform, gradients flow, and the
randomness depends only on the key and the global sample index."""

from __future__ import annotations

import pytest
import torch

from distgan.augment import apply, diff_augment, parse_policy, sample_params, slice_params
from distgan.errors import ConfigError

ALL = ("color", "translation", "cutout")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_policy_names_are_checked() -> None:
    assert parse_policy("color, translation,cutout") == ALL and parse_policy("") == ()
    with pytest.raises(ConfigError, match=r"^augment.diffaugment: unknown policy 'colour' \(choose from color, "):
        parse_policy("colour,cutout")


def test_translation_shifts_by_the_drawn_offsets_and_zero_fills() -> None:
    x = torch.zeros(2, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    params = {"shift_h": torch.tensor([2, -1]), "shift_w": torch.tensor([-2, 0])}
    out = apply(x, ["translation"], params)
    assert out[0, 0, 6, 10] == 1 and out[1, 0, 9, 8] == 1 and out.sum() == 2  # out[i, j] = x[i + dh, j + dw]
    full = apply(
        torch.ones(1, 1, 16, 16), ["translation"], {"shift_h": torch.tensor([2]), "shift_w": torch.tensor([0])}
    )
    assert full[0, 0, -2:].eq(0).all() and full[0, 0, :-2].eq(1).all()  # what comes in from outside is zero
    drawn = sample_params(["translation"], 1000, (16, 16), _gen(), "cpu")
    assert drawn["shift_h"].min() == -2 and drawn["shift_h"].max() == 2  # up to 1/8 of the side


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_border() -> None:
    ones = torch.ones(2, 3, 16, 16)
    out = apply(ones, ["cutout"], {"cutout_h": torch.tensor([8, 0]), "cutout_w": torch.tensor([8, 15])})
    zero = out[0].eq(0).all(0)
    assert zero.sum() == 64 and zero[4:12, 4:12].all()  # an 8x8 square centred at (8, 8), in every channel
    assert out[1].eq(0).all(0).sum() == 4 * 5  # centred at a corner: rows 0..3, columns 11..15


def test_color_changes_brightness_saturation_and_contrast() -> None:
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    one = lambda **kw: {**{"brightness": 0.0, "saturation": 1.0, "contrast": 1.0}, **kw}  # noqa: E731
    as_params = lambda d: {k: torch.tensor([float(v)]) for k, v in d.items()}  # noqa: E731
    assert torch.allclose(apply(x, ["color"], as_params(one())), x, atol=1e-6)  # the identity
    assert torch.allclose(apply(x, ["color"], as_params(one(brightness=0.3))), x + 0.3, atol=1e-6)
    grey = apply(x, ["color"], as_params(one(saturation=0.0)))
    assert torch.allclose(grey, x.mean(1, keepdim=True).expand_as(x), atol=1e-6)  # no colour left
    flat = apply(x, ["color"], as_params(one(contrast=0.5)))
    assert torch.allclose(flat - flat.mean(), (x - x.mean()) * 0.5, atol=1e-6)


def test_a_pair_gets_the_same_transform() -> None:
    source, image = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    params = sample_params(ALL, 4, (16, 16), _gen(), "cpu")
    a, b = apply([source, image], ALL, params)
    assert torch.equal(a, apply(source, ALL, params)) and torch.equal(b, apply(image, ALL, params))
    same_a, same_b = apply([image, image.clone()], ALL, params)
    assert torch.equal(same_a, same_b)
    other = sample_params(ALL, 4, (16, 16), _gen(1), "cpu")  # two separate draws would not match
    assert not torch.equal(apply(image, ALL, params), apply(image, ALL, other))


def test_deterministic_for_a_key_and_slicing_the_global_batch_equals_augmenting_the_slice() -> None:
    x = torch.randn(8, 1, 16, 16)
    assert torch.equal(diff_augment(x, "color,translation,cutout", _gen(3)), diff_augment(x, ",".join(ALL), _gen(3)))
    assert not torch.equal(diff_augment(x, ",".join(ALL), _gen(3)), diff_augment(x, ",".join(ALL), _gen(4)))
    params = sample_params(ALL, 8, (16, 16), _gen(5), "cpu")  # the global batch: 2 ranks x 2 micro-batches x 2
    whole = apply(x, ALL, params)
    for start in range(0, 8, 2):
        part = apply(x[start : start + 2], ALL, slice_params(params, start, start + 2))
        assert torch.equal(part, whole[start : start + 2])


def test_differentiable_with_respect_to_the_input() -> None:
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    params = sample_params(ALL, 4, (16, 16), _gen(), "cpu")
    assert torch.autograd.gradcheck(lambda t: apply(t, ALL, params), (x,), fast_mode=True)
    y = apply(x, ["translation", "cutout"], params)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert set(grad.unique().tolist()) <= {0.0, 1.0}  # shifts and masks pass each kept pixel's gradient once
    assert grad.sum() == y.ne(0).sum()
