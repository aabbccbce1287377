"""Statistics reduced across ranks, W&B through Accelerate's trackers, and sample grids."""
