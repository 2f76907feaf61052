"""`tiered_imagenet`: tieredImageNet (Ren et al. 2018), 351 / 97 / 160 classes under 20 / 6 / 8 disjoint
ImageNet super-categories, 84 x 84 RGB, from the MetaOptNet files:

    train_images.npz, train_labels.pkl, val_images.npz, val_labels.pkl, test_images.npz, test_labels.pkl

Each .npz holds `images` (uint8 N x 84 x 84 x 3); each .pkl a dict with the per-image class labels under
`labels` (MetaOptNet) or `label_specific` (Ren et al.'s release), and class names under
`label_specific_str` where present. The image arrays are streamed in row chunks, never loaded whole, and the
built split is read by random access (`--config.dataset.in_memory=False`), so neither building nor training
needs the 9.5 GB train split in memory.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from metadiff_jax.data import user_files
from metadiff_jax.data.user_files import UserFileError

FILES = {"train": "train", "validation": "val", "test": "test"}

_INSTRUCTIONS = """\
Put MetaOptNet's tieredImageNet files (train_images.npz, train_labels.pkl, val_images.npz, val_labels.pkl,
test_images.npz, test_labels.pkl) in the manual folder: <data_dir>/downloads/manual unless
--config.dataset.manual_dir names another.
"""


class TieredImagenet(user_files.UserFilesBuilder):
    """tieredImageNet: 351 / 97 / 160 classes, 84 x 84 x 3, converted from the user's MetaOptNet files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="84px", description="MetaOptNet's files, 84 x 84 x 3.")]
    IMAGE_SHAPE = (84, 84, 3)
    EXPECTED_CLASSES = {"train": 351, "validation": 97, "test": 160}

    def read_sources(self, folder: pathlib.Path, notes: list[str]) -> dict[str, user_files.SplitSource]:
        return {split: read_split(folder, prefix) for split, prefix in FILES.items()}


def read_split(folder: pathlib.Path, prefix: str) -> user_files.SplitSource:
    images_from = f"MetaOptNet's tieredImageNet {prefix}_images.npz"
    labels_from = f"MetaOptNet's tieredImageNet {prefix}_labels.pkl"
    images = user_files.NpyMember(user_files.require_file(folder, f"{prefix}_images.npz", images_from), "images", images_from)
    if images.dtype != np.uint8 or tuple(images.shape[1:]) != TieredImagenet.IMAGE_SHAPE:
        raise UserFileError(f"{images.path}: 'images' is {images.dtype} {images.shape}; expected uint8 (N, 84, 84, 3). Put {images_from} there.")
    labels_path = user_files.require_file(folder, f"{prefix}_labels.pkl", labels_from)
    content = user_files.load_pickle(labels_path, labels_from)
    key = next((k for k in ("labels", "label_specific") if isinstance(content, dict) and k in content), None)
    if key is None:
        keys = sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__
        raise UserFileError(f"{labels_path} holds {keys}; expected a dict with 'labels' or 'label_specific'. Put {labels_from} there.")
    labels = user_files.check_labels(labels_path, content[key], images.shape[0], key)
    originals, labels = np.unique(labels, return_inverse=True)
    names = content.get("label_specific_str")
    if names is not None and len(names) > int(originals.max()):
        class_names = [str(names[int(label)]) for label in originals]
    elif names is not None and len(names) == len(originals):
        class_names = [str(name) for name in names]
    else:
        class_names = [f"class_{int(label)}" for label in originals]
    return user_files.SplitSource(class_names, labels.astype(np.int64), images.chunks)
