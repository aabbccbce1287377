"""Training: set up (accelerator, precision, wrapping), the two-phase step, checkpoints and the loop."""
