"""Time-series augmentations in the manner of tsaug and tsai, as seeded perturbations."""
