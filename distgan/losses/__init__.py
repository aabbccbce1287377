"""Loss terms that families compose into their D and G phases, and the regularizers of D."""

from distgan.losses.adversarial import (
    ADVERSARIAL,
    d_bce,
    d_hinge,
    d_lsgan,
    d_wgan,
    g_hinge,
    g_lsgan,
    g_nonsaturating,
    get_adversarial,
)
from distgan.losses.penalties import gradient_penalty, input_gradients, interpolate, r1_penalty

__all__ = [
    "ADVERSARIAL",
    "d_bce",
    "d_hinge",
    "d_lsgan",
    "d_wgan",
    "g_hinge",
    "g_lsgan",
    "g_nonsaturating",
    "get_adversarial",
    "gradient_penalty",
    "input_gradients",
    "interpolate",
    "r1_penalty",
]
