"""Loss terms that families compose into their D and G phases."""

from distgan.losses.adversarial import d_bce, g_nonsaturating

__all__ = ["d_bce", "g_nonsaturating"]
