"""Gradient penalties on D: R1 (Mescheder et al., 2018) and WGAN-GP (Gulrajani et al., 2017).

Both take `critic`, a callable images -> logits: D with the batch's condition already bound (the labels of
a cgan, the source images of pix2pix), so the penalty is the gradient with respect to the images only and
the condition is kept. The returned penalty is differentiable with respect to D's parameters (the gradient
is taken with `create_graph=True`): added to D's loss, one backward trains D on both, through the
DDP-wrapped D.

Mixed precision (pytorch/pytorch#25081; the AMP docs' "gradient penalty" recipe; mmgen's
`disc_auxiliary_loss.py`): under fp16, small input gradients underflow in the half-precision backward, so
pass `scale` (the GradScaler's scale as a device tensor, e.g. `scaler._scale`, no host sync): the gradient
is taken of `scale * logits` and divided by `scale` before it is squared. The penalty itself is then
computed in fp32 (also under bf16, where no scale is needed) and goes into the loss that the caller scales
as usual; an inf from an overflowing scale reaches D's gradients, so the scaler skips that step.

Compiled graphs (`train.compile`) have no double backward: the trainer runs a D step that carries a
penalty eagerly (distgan/train/step.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Critic = Callable[[Tensor], Tensor]


def input_gradients(critic: Critic, x: Tensor, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(d sum(critic(x)) / dx in (at least) fp32, the logits critic(x)), the gradient kept in the graph.

    `x` must require grad. Summing the logits gives each image the gradient of its own logit (images do not
    interact in D, except through BatchNorm statistics), and of the sum of its patches for a PatchGAN.
    With `scale`, each logit's backward starts at scale / N (N logits), as it does for the scaled mean loss
    of the D phase: 2^16, GradScaler's first scale, would itself overflow fp16 logits (max 65504).
    """
    logits = critic(x)
    out = _fp32(logits).sum()
    if scale is not None:
        factor = scale.reshape(()) / logits.numel()
        out = out * factor  # the fp16 backward then carries factor * grad, which does not underflow
    (grad,) = torch.autograd.grad(out, x, create_graph=True)
    grad = _fp32(grad)
    if scale is not None:
        grad = grad / factor  # unscale before squaring
    return grad, logits


def _fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t  # float64 stays float64


def r1_penalty(critic: Critic, real: Tensor, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(E_x ||grad_x D(x)||^2 on real images, the real logits) in fp32; multiply by gamma / 2 for R1.

    The logits are returned so that a D phase which needs them anyway (the main loss on real images, as
    stylegan2-ada's "Dboth") does not run D on the real batch a second time.
    """
    x = real.detach().requires_grad_(True)
    grad, logits = input_gradients(critic, x, scale)
    return grad.square().flatten(1).sum(1).mean(), logits


def interpolate(real: Tensor, fake: Tensor, alpha: Tensor) -> Tensor:
    """alpha * real + (1 - alpha) * fake per sample; alpha (B,) in [0, 1], drawn by the caller."""
    a = alpha.to(real.dtype).view(-1, *([1] * (real.dim() - 1)))  # (B, 1, 1, 1)
    return a * real.detach() + (1 - a) * fake.detach()


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, alpha: Tensor, scale: Tensor | None = None) -> Tensor:
    """WGAN-GP: E (||grad D(x_hat)||_2 - 1)^2 at x_hat = alpha * real + (1 - alpha) * fake, in fp32.

    Multiply by lambda (10 in the paper). `alpha` (B,) comes from the caller so that it can be keyed like the
    trainer's noise (seed, step, phase, global sample index) and not drawn from a per-rank stream.
    """
    x = interpolate(real, fake, alpha).requires_grad_(True)
    grad, _ = input_gradients(critic, x, scale)
    norm = torch.linalg.vector_norm(grad.flatten(1), dim=1)  # its backward is 0, not nan, at a zero gradient
    return (norm - 1).square().mean()
