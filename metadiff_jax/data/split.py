"""A split's images (or features) grouped by class: what the episode sampler reads.

Kept apart from the dataset builders so that sampling, training and evaluation on features or arrays of
one's own need neither tensorflow-datasets nor the files it writes.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ClassIndexedSplit:
    """A split's images grouped by class: class c is `images[class_starts[c]:class_starts[c + 1]]`.

    images: uint8 `(num_images, height, width, channels)`, anything that takes integer-array indexing.
    class_starts: int64 `(num_classes + 1,)`, increasing, from 0 to num_images.
    identity: names the data exactly (dataset, config, version, split), so saved episodes can be checked.
    """

    images: np.ndarray
    class_starts: np.ndarray
    identity: str

    @property
    def num_classes(self) -> int:
        return len(self.class_starts) - 1

    @property
    def class_sizes(self) -> np.ndarray:
        return np.diff(self.class_starts)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])
