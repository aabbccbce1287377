"""StyleGAN2's generator and discriminator (Karras et al., 2020), written from the papers.

The constructors take the keywords of NVIDIA's stylegan2-ada-pytorch networks (`Generator(z_dim, c_dim, w_dim,
img_resolution, img_channels, mapping_kwargs, synthesis_kwargs)`, `Discriminator(c_dim, img_resolution,
img_channels, architecture, channel_base, ...)`) and hold the same parameters and buffers under the same
state-dict keys, so an official snapshot's weights load as they are (scripts/convert_stylegan2.py) and the
outputs agree (tests/models/test_stylegan2_networks.py runs ../shared/stylegan2/referee.py).

The pieces, as the papers describe them:
  * equalised learning rate: weights are stored N(0, 1) (divided by a learning-rate multiplier) and scaled by
    multiplier / sqrt(fan_in) at run time;
  * mapping network: z (and an embedded class) normalised to unit second moment, an MLP to w, a running mean
    `w_avg` of w for the truncation trick, w broadcast to one copy per synthesis layer (ws);
  * synthesis: a learned 4x4 constant, per layer a modulated 3x3 convolution (weights scaled by the style
    affine(w) per input channel, then demodulated to unit output norm), per-pixel noise times a learned
    strength, bias and leaky ReLU; upsampling by a transposed convolution followed by a [1, 3, 3, 1] FIR
    filter; toRGB outputs summed over resolutions ('skip') or a plain last-layer output ('orig', 'resnet');
  * discriminator: fromRGB, residual blocks of two 3x3 convolutions with FIR-filtered downsampling ('resnet'),
    minibatch standard deviation, a 3x3 convolution, two dense layers; a projection onto the embedded class
    when conditional.

Beyond the official forward, `Generator.forward` takes the training-time inputs the trainer draws itself
(`noise`, `mix_z`, `mix_layer`, `w_mean`, `return_ws`): see its docstring. Nothing here hard-codes float32:
the networks run in the dtype of their parameters (float64 for the referee), blocks listed in `num_fp16_res`
in float16 on CUDA only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2
ACTIVATION_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}  # keeps the activations' second moment at 1


# --- filtering and resampling -------------------------------------------------------------------------
def make_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> Tensor:
    """The 2-D FIR filter outer(taps, taps) normalised to sum 1 (a buffer, `resample_filter`, of each layer)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def fir(
    x: Tensor, f: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0
) -> Tensor:
    """Upsample by zero insertion, pad (negative pads crop), convolve each channel with `f`, keep every
    `down`-th pixel. `pad` is (left, right, top, bottom) on the upsampled image."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(p, 0) for p in pad])
    left, right, top, bottom = (max(-p, 0) for p in pad)
    x = x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]
    # a true convolution (flipped filter), done as a grouped cross-correlation
    k = (f * gain ** (f.ndim / 2)).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x upsampling: zero insertion and the FIR filter (gain 4 keeps the mean)."""
    k = f.shape[-1]
    return fir(x, f, up=2, pad=((k + 1) // 2, (k - 2) // 2, (k + 1) // 2, (k - 2) // 2), gain=4.0)


def downsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x downsampling: the FIR filter, then every other pixel."""
    k = f.shape[-1]
    return fir(x, f, down=2, pad=((k - 1) // 2, (k - 2) // 2, (k - 1) // 2, (k - 2) // 2))


def conv2d_resample(x: Tensor, weight: Tensor, f: Tensor, up: int = 1, down: int = 1, groups: int = 1) -> Tensor:
    """A 'same'-padded k x k convolution, optionally with 2x FIR up- or downsampling around it.

    up=2: a transposed convolution with stride 2, then the filter: a true convolution of the zero-upsampled
    input with `weight` (as the official layers upsample); down=2: the filter, then a stride-2
    cross-correlation; otherwise a plain cross-correlation (PyTorch's conv2d)."""
    k = weight.shape[-1]
    fk = f.shape[-1]
    if up > 1:
        if groups == 1:
            w = weight.transpose(0, 1)
        else:  # (groups * out, in, k, k) -> (groups * in, out, k, k)
            o, i = weight.shape[0] // groups, weight.shape[1]
            w = weight.reshape(groups, o, i, k, k).transpose(1, 2).reshape(groups * i, o, k, k)
        x = F.conv_transpose2d(x, w, stride=up, groups=groups)
        p0 = k // 2 + (fk + up - 1) // 2 - (k - 1)
        p1 = k // 2 + (fk - up) // 2 - (k - up)
        return fir(x, f, pad=(p0, p1, p0, p1), gain=float(up * up))
    if down > 1:
        p0 = k // 2 + (fk - down + 1) // 2
        p1 = k // 2 + (fk - down) // 2
        x = fir(x, f, pad=(p0, p1, p0, p1))
        return F.conv2d(x, weight, stride=down, groups=groups)
    return F.conv2d(x, weight, padding=k // 2, groups=groups)


def bias_act(
    x: Tensor, bias: Tensor | None, activation: str = "linear", gain: float = 1.0, clamp: float | None = None
) -> Tensor:
    """x + bias (per channel), the activation, times `gain`, clamped to +-clamp when given."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    x = x * gain if gain != 1 else x
    return x.clamp(-clamp, clamp) if clamp is not None else x


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each row to unit mean square (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    f: Tensor,
    noise: Tensor | None = None,
    up: int = 1,
    demodulate: bool = True,
    fused: bool = True,
) -> Tensor:
    """Weight (O, I, k, k) modulated by per-sample styles (N, I), demodulated to unit norm per output channel.

    fused: one grouped convolution with per-sample weights; otherwise the activations are scaled before and
    after a shared-weight convolution (cheaper backward; the official networks train this way)."""
    n = x.shape[0]
    o, i, k, _ = weight.shape
    if x.dtype == torch.float16 and demodulate:  # keep fp16 in range: pre-scale by the largest magnitudes
        weight = weight * (1 / math.sqrt(i * k * k) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)  # (N, O, I, k, k)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (N, O)
    if not fused:
        x = x * styles.to(x.dtype).reshape(n, i, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f, up=up)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, o, 1, 1)
        return x + noise.to(x.dtype) if noise is not None else x
    if dcoefs is not None:
        w = w * dcoefs.reshape(n, o, 1, 1, 1)
    x = x.reshape(1, n * i, *x.shape[2:])
    x = conv2d_resample(x, w.reshape(n * o, i, k, k).to(x.dtype), f, up=up, groups=n)
    x = x.reshape(n, o, *x.shape[2:])
    return x + noise.to(x.dtype) if noise is not None else x


# --- layers ---------------------------------------------------------------------------------------------
class FullyConnectedLayer(nn.Module):
    """A dense layer with equalised learning rate (and a learning-rate multiplier)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        if self.activation == "linear":
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, self.activation, ACTIVATION_GAIN[self.activation])

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """A convolution with equalised learning rate, optional FIR up/downsampling, bias, activation, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATION_GAIN[activation]
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        if not trainable:  # frozen layers (Discriminator's freeze_layers): kept in the state dict, not trained
            self.requires_grad_(False)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, self.act_gain * gain, clamp)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling 2x), noise, bias, leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.act_gain = ACTIVATION_GAIN[activation]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", make_filter(resample_filter))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(
        self,
        x: Tensor,
        w: Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = True,
        gain: float = 1.0,
        noise: Tensor | None = None,
    ) -> Tensor:
        """noise_mode 'random' uses `noise` (N, 1, res, res) when given, else draws it; 'const' the stored
        noise_const; 'none' no noise."""
        styles = self.affine(w)
        scaled = None
        if self.use_noise and noise_mode == "random":
            if noise is None:
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            scaled = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            scaled = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, self.resample_filter, scaled, up=self.up, fused=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, self.act_gain * gain, clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, not demodulated, linear."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, w: Tensor, fused_modconv: bool = True) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        f = x.new_ones(1, 1)  # unused: no resampling
        x = modulated_conv2d(x, self.weight, styles, f, demodulate=False, fused=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


# --- generator ------------------------------------------------------------------------------------------
class MappingNetwork(nn.Module):
    """z (and c) -> w, with a running mean `w_avg` (train mode) and truncation towards it."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: Tensor | None,
        c: Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        skip_w_avg_update: bool = False,
        w_mean: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """ws (N, num_ws, w_dim) (or w (N, w_dim) without num_ws). In train mode w_avg moves towards the batch
        mean of w (through `w_mean` when given: e.g. the mean over all processes)."""
        x = normalize_2nd_moment(z) if self.z_dim > 0 else None
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(self.embed.weight.dtype)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            mean = x.detach().mean(dim=0)
            mean = w_mean(mean) if w_mean is not None else mean
            self.w_avg.copy_(mean.to(self.w_avg.dtype).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            avg = self.w_avg.to(x.dtype)
            if truncation_cutoff is None:
                x = avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([avg.lerp(x[:, :truncation_cutoff], truncation_psi), x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (upsampling) convolutions and, for 'skip' or the last block, toRGB."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture={architecture!r}: use 'orig', 'skip' or 'resnet'")
        self.in_channels, self.resolution, self.is_last = in_channels, resolution, is_last
        self.architecture, self.use_fp16 = architecture, use_fp16
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.num_conv = self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim,
                resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp, **layer_kwargs
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter
            )

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        noise_mode: str = "random",
        noise: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        dtype = self.conv1.weight.dtype
        if self.use_fp16 and not force_fp32 and ws.device.type == "cuda":
            dtype = torch.float16
        if fused_modconv is None:  # training: the non-fused form (cheaper backward); inference: one grouped conv
            fused_modconv = not self.training and (dtype != torch.float16 or ws.shape[0] == 1)
        noise = noise or {}
        w_iter = iter(ws.unbind(dim=1))
        kw = {"fused_modconv": fused_modconv, "noise_mode": noise_mode}
        name = f"b{self.resolution}"
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w_iter), noise=noise.get(f"{name}.conv1"), **kw)
        elif self.architecture == "resnet":
            x = x.to(dtype)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise=noise.get(f"{name}.conv0"), **kw)
            x = self.conv1(x, next(w_iter), noise=noise.get(f"{name}.conv1"), gain=math.sqrt(0.5), **kw)
            x = y + x
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise=noise.get(f"{name}.conv0"), **kw)
            x = self.conv1(x, next(w_iter), noise=noise.get(f"{name}.conv1"), **kw)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(self.conv1.weight.dtype)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws -> image: blocks from 4x4 to img_resolution, widths min(channel_base / res, channel_max)."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs,
    ) -> None:
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution={img_resolution}: must be a power of two, at least 4")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim,
                res,
                img_channels,
                is_last=res == img_resolution,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws: Tensor, **block_kwargs) -> Tensor:
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), **block_kwargs)
            w_idx += block.num_conv
        return img

    def noise_shapes(self) -> list[tuple[str, int]]:
        """(noise input, resolution) in block order: b4.conv1, b8.conv0, b8.conv1, ... (`noise=` keys)."""
        return [
            (f"b{res}.{conv}", res)
            for res in self.block_resolutions
            for conv in (("conv1",) if res == 4 else ("conv0", "conv1"))
        ]


class Generator(nn.Module):
    """Mapping network + synthesis network (the official keywords and state dict)."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **(synthesis_kwargs or {}))
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))

    def forward(
        self,
        z: Tensor,
        c: Tensor,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        noise: Mapping[str, Tensor] | None = None,
        mix_z: Tensor | None = None,
        mix_layer: Tensor | None = None,
        w_mean: Callable[[Tensor], Tensor] | None = None,
        return_ws: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Images (N, C, H, W) of latents z (N, z_dim) and one-hot classes c (N, c_dim; (N, 0) unconditional).

        Training inputs (drawn by the trainer so every process count trains on the same numbers):
          noise: unit-normal per-pixel noise {"b4.conv1": (N, 1, 4, 4), "b8.conv0": ...} for noise_mode
            'random' (missing entries are drawn here);
          mix_z, mix_layer: style mixing per sample: ws[i, mix_layer[i]:] come from mix_z[i]
            (mix_layer[i] == num_ws: no mixing for that sample);
          w_mean: reduces the batch mean of w before w_avg moves towards it (train mode);
          return_ws: also return the ws the synthesis network ran on (for path-length regularisation).
        """
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, w_mean=w_mean)
        if mix_z is not None and mix_layer is not None:
            mixed = self.mapping(mix_z, c, truncation_psi, truncation_cutoff, skip_w_avg_update=True)
            layers = torch.arange(self.num_ws, device=ws.device)
            take = (layers[None, :] >= mix_layer.to(ws.device)[:, None]).unsqueeze(2)
            ws = torch.where(take, mixed, ws)
        img = self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv, noise=noise)
        return (img, ws) if return_ws else img


# --- discriminator --------------------------------------------------------------------------------------
class DiscriminatorBlock(nn.Module):
    """One resolution of D: (fromRGB,) two 3x3 convolutions, the second downsampling 2x, (a 1x1 residual)."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ) -> None:
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture={architecture!r}: use 'orig', 'skip' or 'resnet'")
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels={in_channels}: must be 0 or tmp_channels={tmp_channels}")
        self.in_channels, self.resolution, self.architecture = in_channels, resolution, architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.num_layers = 0

        def trainable() -> bool:  # layers before freeze_layers (counted from the input) stay frozen
            idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        common = {"activation": activation, "conv_clamp": conv_clamp}
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, 3, down=2, resample_filter=resample_filter, trainable=trainable(), **common
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels,
                out_channels,
                1,
                bias=False,
                down=2,
                resample_filter=resample_filter,
                trainable=trainable(),
            )

    def forward(self, x: Tensor | None, img: Tensor | None, force_fp32: bool = False) -> tuple[Tensor, Tensor | None]:
        dtype = self.conv0.weight.dtype
        device = (x if x is not None else img).device
        if self.use_fp16 and not force_fp32 and device.type == "cuda":
            dtype = torch.float16
        x = x.to(dtype) if x is not None else None
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img.to(dtype))
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation over groups of `group_size` samples (sample i in group i mod N/G)."""

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g:
            raise ValueError(
                f"minibatch std: a batch of {n} does not split into groups of {g} "
                "(make the per-process batch a multiple of model.mbstd_group_size)"
            )
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # (n/g, F)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 end of D: minibatch std, a 3x3 convolution, two dense layers, the class projection."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.cmap_dim, self.architecture = cmap_dim, architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, 3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: Tensor, img: Tensor | None, cmap: Tensor | None, force_fp32: bool = False) -> Tensor:
        dtype = self.conv.weight.dtype
        x = x.to(dtype)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """Blocks from img_resolution down to 8x8, then the 4x4 epilogue (the official keywords and state dict)."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution={img_resolution}: must be a power of two, at least 4")
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        common = {"img_channels": img_channels, "architecture": architecture, "conv_clamp": conv_clamp}
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0,
                channels[res],
                channels[res // 2],
                res,
                first_layer_idx=layer_idx,
                use_fp16=res >= fp16_resolution,
                **(block_kwargs or {}),
                **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(0, c_dim, cmap_dim, num_ws=None, w_avg_beta=None, **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim, 4, **(epilogue_kwargs or {}), **common)

    def forward(self, img: Tensor, c: Tensor, **block_kwargs) -> Tensor:
        """Logits (N, 1) of images (N, C, H, W) and one-hot classes c (N, c_dim)."""
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)
