"""ADA: each transform does what the paper says, p = 0 is the identity, gradients flow, the draws depend only
on the generator and the global sample index (never on p or the batch), and the controller moves p by the
paper's step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distgan.augment import slice_params
from distgan.augment.ada import AdaController, apply, parse_pipeline, sample_params
from distgan.errors import ConfigError, DistganError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 2, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed)) * 2 - 1


def _identity(n: int = 2, dtype: torch.dtype = torch.float32, **changes: list) -> dict[str, torch.Tensor]:
    """Parameters of the full pipeline that do nothing, with `changes` (one value per sample) put in."""
    params = {
        "p": torch.ones(n, dtype=torch.float64),
        "xflip": torch.zeros(n, dtype=torch.long),
        "rot90": torch.zeros(n, dtype=torch.long),
        "int_shift": torch.zeros(n, 2, dtype=torch.long),
        "scale": torch.ones(n),
        "pre_rot": torch.zeros(n),
        "aniso": torch.ones(n),
        "post_rot": torch.zeros(n),
        "frac_shift": torch.zeros(n, 2),
        "brightness": torch.zeros(n),
        "contrast": torch.ones(n),
        "lumaflip": torch.zeros(n),
        "hue": torch.zeros(n),
        "saturation": torch.ones(n),
    }
    for key, value in changes.items():
        params[key] = torch.tensor(value, dtype=params[key].dtype)
    return {k: v.to(dtype) if v.is_floating_point() and k != "p" else v for k, v in params.items()}


def test_pipeline_names_are_checked() -> None:
    assert parse_pipeline("bgc") == ("b", "g", "c") and parse_pipeline("cb") == ("b", "c") and parse_pipeline("") == ()
    with pytest.raises(ConfigError, match=r"^augment.ada_pipeline: unknown group 'x' in 'bgx' \(choose letters"):
        parse_pipeline("bgx")
    assert set(sample_params(0.5, 3, (8, 8), _gen(), "cpu", "c")) == {
        "p",
        "brightness",
        "contrast",
        "lumaflip",
        "hue",
        "saturation",
    }
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\], got 1.5"):
        sample_params(1.5, 3, (8, 8), _gen(), "cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_p_zero_returns_the_input_itself(dtype: torch.dtype) -> None:
    x = _images().to(dtype)
    assert apply(x, sample_params(0.0, 2, (8, 8), _gen(), "cpu")) is x
    params = _identity()
    del params["p"]  # without p, all-identity values are detected from the values themselves
    assert apply(x, params) is x
    assert apply(x.float()[:, :1], _identity(hue=[1.0, 2.0], saturation=[0.5, 3.0])) is not None  # C=1 ignores them
    gray = x.float()[:, :1]
    assert apply(gray, _identity(hue=[1.0, 2.0], saturation=[0.5, 3.0])) is gray


def test_p_one_changes_every_image_and_keeps_dtype_and_shape() -> None:
    x = _images(16, h=16, w=16)
    out = apply(x, sample_params(1.0, 16, (16, 16), _gen(), "cpu"))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert ((out - x).abs().flatten(1).amax(1) > 1e-3).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast inside a mixed-precision forward: x's dtype back
        half = apply(x.half(), sample_params(1.0, 16, (16, 16), _gen(), "cpu"))
    assert half.dtype == torch.float16 and (half.float() - out).abs().max() < 2e-2


def test_blit_matches_flip_rot90_and_a_reflected_integer_shift() -> None:
    x = _images(4)
    assert torch.equal(apply(x, _identity(4, xflip=[1, 1, 1, 1])), torch.flip(x, dims=[3]))
    out = apply(x, _identity(4, rot90=[0, 1, 2, 3]))
    for k in range(4):
        assert torch.equal(out[k], torch.rot90(x[k], k, dims=(1, 2)))
    # Flip first, then rotate: rot90(flip(x)).
    assert torch.equal(apply(x, _identity(4, xflip=[1] * 4, rot90=[1] * 4)), torch.rot90(torch.flip(x, [3]), 1, (2, 3)))
    # out[i, j] = x[i - dy, j - dx], mirrored at the border like F.pad's "reflect".
    out = apply(x, _identity(4, int_shift=[[2, 1], [-1, 0], [0, -2], [1, 1]]))
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for k, (dx, dy) in enumerate([(2, 1), (-1, 0), (0, -2), (1, 1)]):
        assert torch.equal(out[k], padded[k, :, 2 - dy : 10 - dy, 2 - dx : 10 - dx])
    drawn = sample_params(1.0, 2000, (32, 32), _gen(), "cpu", "b")["int_shift"]
    assert drawn.min() == -4 and drawn.max() == 4  # up to 1/8 of the side


def test_geometric_transforms_resample_as_expected() -> None:
    x = _images(2)
    # A full turn (and scale 1): "on", so resampled, but the image comes back.
    out = apply(x, _identity(pre_rot=[2 * math.pi, 0.0], post_rot=[0.0, -2 * math.pi], scale=[1.0, 1.0]))
    assert (out - x).abs().max() < 1e-5
    # A quarter turn of pixel centres onto pixel centres: rot90 (content turned counter-clockwise by -pi/2).
    out = apply(x, _identity(pre_rot=[-math.pi / 2, 0.0], post_rot=[0.0, -math.pi / 2]))
    assert (out - torch.rot90(x, 1, dims=(2, 3))).abs().max() < 1e-5
    # A one-pixel fractional shift is the integer shift inside the image.
    out = apply(x, _identity(frac_shift=[[1.0, 0.0], [0.0, -1.0]]))
    assert (out[0, :, :, 1:] - x[0, :, :, :-1]).abs().max() < 1e-5
    assert (out[1, :, :-1] - x[1, :, 1:]).abs().max() < 1e-5
    # Scaling by 2 about the centre (anisotropic 1): the centre 4x4 becomes each pixel doubled, interpolated.
    out = apply(x, _identity(scale=[2.0, 1.0]))
    expected = F.interpolate(x[:1, :, 2:6, 2:6], scale_factor=2, mode="bilinear", align_corners=False)
    assert (out[0, :, 1:7, 1:7] - expected[0, :, 1:7, 1:7]).abs().max() < 1e-5
    assert torch.equal(out[1], x[1])  # a sample that is off keeps its input exactly, whatever the batch does


def test_color_transforms_match_their_formulas() -> None:
    x = _images(2)
    mean = x.mean(1, keepdim=True)  # the grey level: the projection on the grey axis
    assert torch.allclose(apply(x, _identity(brightness=[0.3, -0.2])), x + torch.tensor([0.3, -0.2]).view(2, 1, 1, 1))
    assert torch.allclose(apply(x, _identity(contrast=[2.0, 0.5])), x * torch.tensor([2.0, 0.5]).view(2, 1, 1, 1))
    # Brightness before contrast: c * (x + b).
    assert torch.allclose(apply(x, _identity(brightness=[0.1, 0.1], contrast=[2.0, 2.0])), 2 * (x + 0.1), atol=1e-6)
    assert torch.allclose(apply(x, _identity(lumaflip=[1.0, 1.0])), x - 2 * mean, atol=1e-6)
    assert torch.allclose(apply(x, _identity(saturation=[0.0, 0.0])), mean.expand_as(x), atol=1e-6)
    assert torch.allclose(apply(x, _identity(saturation=[2.0, 2.0])), mean + 2 * (x - mean), atol=1e-6)
    # A third of a turn about the grey axis permutes the channels.
    assert torch.allclose(apply(x, _identity(hue=[2 * math.pi / 3] * 2)), x[:, [2, 0, 1]], atol=1e-6)
    gray = x[:, :1]
    assert torch.allclose(apply(gray, _identity(lumaflip=[1.0, 1.0])), -gray)
    out = apply(gray, _identity(brightness=[0.1, 0.1], contrast=[2.0, 2.0], lumaflip=[1.0, 0.0], hue=[1.0, 1.0]))
    assert torch.allclose(out, torch.stack([-2 * (gray[0] + 0.1), 2 * (gray[1] + 0.1)]), atol=1e-6)


def test_gradients_flow_to_the_images() -> None:
    x = _images(2, h=5, w=5).double().requires_grad_()
    params = _identity(
        2,
        dtype=torch.float64,
        xflip=[1, 0],
        rot90=[1, 3],
        int_shift=[[1, 0], [0, -1]],
        scale=[1.2, 0.8],
        pre_rot=[0.3, -1.0],
        aniso=[0.9, 1.1],
        post_rot=[0.5, 0.0],
        frac_shift=[[0.3, -0.2], [0.1, 0.4]],
        brightness=[0.1, -0.2],
        contrast=[1.5, 0.7],
        lumaflip=[1.0, 0.0],
        hue=[0.5, -2.0],
        saturation=[1.5, 0.3],
    )
    assert torch.autograd.gradcheck(lambda t: apply(t, params), (x,))


def test_a_samples_draws_and_output_depend_only_on_its_global_index() -> None:
    x = _images(8, h=16, w=16)
    params = sample_params(0.7, 8, (16, 16), _gen(3), "cpu")
    whole = apply(x, params)
    part = apply(x[4:8], slice_params(params, 4, 8))
    assert torch.equal(part, whole[4:8])
    for k in range(8):  # and alone
        assert torch.equal(apply(x[k : k + 1], slice_params(params, k, k + 1)), whole[k : k + 1])


def test_the_draws_do_not_depend_on_p() -> None:
    g1, g2 = _gen(5), _gen(5)
    low, high = sample_params(0.1, 64, (16, 16), g1, "cpu"), sample_params(0.9, 64, (16, 16), g2, "cpu")
    assert torch.equal(g1.get_state(), g2.get_state())
    full = sample_params(1.0, 64, (16, 16), _gen(5), "cpu")
    for params in (low, high):
        for key in ("scale", "brightness", "contrast", "saturation", "hue"):
            on = params[key] != _identity(64)[key]
            assert torch.equal(params[key][on], full[key][on])  # where on, the value drawn at p = 1


def test_each_transform_is_on_with_probability_p_and_each_rotation_with_one_minus_sqrt() -> None:
    params = sample_params(0.5, 4000, (16, 16), _gen(), "cpu")
    assert abs((params["scale"] != 1).float().mean() - 0.5) < 0.04
    assert abs((params["brightness"] != 0).float().mean() - 0.5) < 0.04
    assert abs((params["xflip"] != 0).float().mean() - 0.25) < 0.04  # on half the time, then a fair coin
    p_rot = 1 - math.sqrt(0.5)
    assert abs((params["pre_rot"] != 0).float().mean() - p_rot) < 0.04
    assert abs(((params["pre_rot"] != 0) | (params["post_rot"] != 0)).float().mean() - 0.5) < 0.04


def _fed(ctrl: AdaController, sign: float, steps: int, reduce=lambda t: t) -> list:
    out = []
    for _ in range(steps):
        ctrl.accumulate(torch.full((8, 1), sign))
        out.append(ctrl.update(32, reduce))
    return out


def test_controller_steps_p_by_the_images_seen() -> None:
    ctrl = AdaController(p=0.1, target=0.6, interval=4, kimg=0.5)
    logs = _fed(ctrl, 1.0, 4)
    assert logs[:3] == [None, None, None] and logs[3] == {"ada_p": pytest.approx(0.1 + 128 / 500), "ada_rt": 1.0}
    assert ctrl.p == pytest.approx(0.1 + 128 / 500)
    falling = AdaController(p=0.3, interval=2, kimg=0.5)
    _fed(falling, -2.0, 2)
    assert falling.p == pytest.approx(0.3 - 64 / 500)
    _fed(falling, -2.0, 4)
    assert falling.p == 0.0  # clamped
    rising = AdaController(p=0.9, interval=1, kimg=0.01)
    _fed(rising, 1.0, 1)
    assert rising.p == 1.0
    fixed = AdaController(p=0.2, interval=1, fixed=True)
    assert _fed(fixed, 1.0, 1) == [{"ada_p": 0.2, "ada_rt": 1.0}]
    assert AdaController(interval=1).update(32, lambda t: t) == {
        "ada_p": 0.0,
        "ada_rt": pytest.approx(math.nan, nan_ok=True),
    }


def test_controller_sums_across_processes() -> None:
    one, two = AdaController(p=0.5, interval=2, kimg=1), AdaController(p=0.5, interval=2, kimg=1)
    mixed = torch.tensor([1.0, 1.0, 1.0, -1.0])  # r_t = 0.5 < 0.6: p falls
    for _ in range(2):
        one.accumulate(mixed), two.accumulate(mixed)
        one.update(64, lambda t: t)
        two.update(64, lambda t: t * 2)  # two ranks that saw the same
    assert one.p == two.p == pytest.approx(0.5 - 128 / 1000)


def test_controller_state_round_trip_resumes_exactly() -> None:
    ctrl = AdaController(p=0.25, interval=4, kimg=1)
    _fed(ctrl, 1.0, 6)  # one update, then two steps into the next interval
    state = ctrl.state_dict()
    assert state == {"p": pytest.approx(0.25 + 0.128), "sum_sign": 16.0, "count": 16.0, "images": 64, "steps": 2}
    resumed = AdaController(interval=4, kimg=1)
    resumed.load_state_dict(state)
    assert _fed(resumed, -1.0, 2) == _fed(ctrl, -1.0, 2) and resumed.state_dict() == ctrl.state_dict()
    for bad, match in [
        ({**state, "p": 1.5}, r"^ada state: p: must be a number in \[0, 1\], got 1.5$"),
        ({**state, "count": -1.0}, r"^ada state: count: must be"),
        ({**state, "sum_sign": 20.0}, r"^ada state: sum_sign: must be a number in \[-16, 16\]"),
        ({**state, "steps": 1.5}, r"^ada state: steps must be an integer >= 0, got 1.5$"),
        ({k: v for k, v in state.items() if k != "images"}, r"^ada state: missing field 'images'$"),
        ({**state, "q": 0}, r"^ada state: unknown field 'q'"),
    ]:
        with pytest.raises(DistganError, match=match):
            resumed.load_state_dict(bad)
    with pytest.raises(ConfigError, match=r"^augment.ada_interval: must be an integer >= 1, got 0$"):
        AdaController(interval=0)
