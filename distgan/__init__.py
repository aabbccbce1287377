"""distgan: distributed GAN training on Hugging Face Accelerate.

The flow, one folder a step: config -> data -> models (families) -> losses -> train (D phase, G phase)
-> logging / checkpoint -> sampling.
"""

__version__ = "0.1.0"
