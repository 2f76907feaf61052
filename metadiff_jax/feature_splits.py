"""Frozen-backbone features as MetaDiff consumes them: their checks and their scale.

Features arrive grouped by class in a ClassIndexedSplit (from the feature cache, a synthetic generator, or a
user's own extractor); everything downstream assumes they fit the denoiser and hold finite numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metadiff_jax.data.split import ClassIndexedSplit
from metadiff_jax.diffusion import class_mean_targets


class InputError(ValueError):
    """Features or episodes that do not fit the model: the message names the mismatch and the fix."""


def check_features(features, dim: int, name: str) -> None:
    """Raises InputError unless the last axis of `features` is `dim` and every value is finite."""
    features = np.asarray(features)
    if features.shape[-1] != dim:
        raise InputError(
            f"{name} features have dim {features.shape[-1]} but the denoiser was built for dim {dim}: build it "
            f"with dim={features.shape[-1]} or use features of dim {dim}."
        )
    if not np.all(np.isfinite(features)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(features))[0])
        raise InputError(f"{name} features hold NaN or Inf (first at index {bad}); fix the feature extractor or cache.")


def scale_to_unit_targets(splits: dict[str, ClassIndexedSplit]) -> tuple[dict[str, ClassIndexedSplit], float]:
    """Multiplies every split by 1 / std of the train class means, so MetaDiff's targets W0 have unit scale.

    Diffusion assumes data on the scale of its N(0, I) noise; pooled ReLU features are not (Conv-4's have
    norms near 40). One scalar for all splits leaves cosine classifiers, and so the prototype baseline,
    unchanged. Returns (scaled splits, the scale).
    """
    targets = class_mean_targets(splits["train"].images, splits["train"].class_starts)
    scale = float(1.0 / targets.std())
    scaled = {name: dataclasses.replace(split, images=(split.images * scale).astype(np.float32)) for name, split in splits.items()}
    return scaled, scale
