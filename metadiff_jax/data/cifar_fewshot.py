"""`cifar_fs` and `fc100`: few-shot splits of CIFAR-100, 32 x 32 RGB, 600 images a class (CIFAR-100's train
and test images together), from CIFAR-100's python tarball `cifar-100-python.tar.gz` (the same file serves
both):

- CIFAR-FS (Bertinetto et al. 2019): 64 / 16 / 20 classes, split by class (the R2D2 class lists below).
- FC100 (Oreshkin et al. 2018): 60 / 20 / 20 classes, split by superclass (12 / 4 / 4), so that train and
  test classes are semantically far apart (TADAM's superclass lists below).
"""

from __future__ import annotations

import pathlib
import pickle
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from metadiff_jax.data import user_files
from metadiff_jax.data.user_files import UserFileError

TARBALL = "cifar-100-python.tar.gz"
TARBALL_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
WHERE_FROM = f"CIFAR-100's python version, {TARBALL} (https://www.cs.toronto.edu/~kriz/cifar.html)"

CIFAR_FS_CLASSES = {
    "train": (
        "train skyscraper turtle raccoon spider orange castle keyboard clock pear girl seal elephant apple aquarium_fish bus "
        "mushroom possum squirrel chair tank plate wolf road mouse boy shrew couch sunflower tiger caterpillar lion streetcar "
        "lawn_mower tulip forest dolphin cockroach bear porcupine bee hamster lobster bowl can bottle trout snake bridge "
        "pine_tree skunk lizard cup kangaroo oak_tree dinosaur rabbit orchid willow_tree ray palm_tree mountain house cloud"
    ).split(),
    "validation": "otter motorcycle television lamp crocodile shark butterfly beaver beetle tractor flatfish maple_tree camel crab sea cattle".split(),
    "test": (
        "baby bed bicycle chimpanzee fox leopard man pickup_truck plain poppy rocket rose snail sweet_pepper table telephone "
        "wardrobe whale woman worm"
    ).split(),
}
# CIFAR-100 superclass indices (coarse labels) of each FC100 split.
FC100_SUPERCLASSES = {"train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19), "validation": (8, 11, 13, 16), "test": (0, 7, 12, 14)}

_INSTRUCTIONS = f"Put {WHERE_FROM} in the manual folder: <data_dir>/downloads/manual unless --config.dataset.manual_dir names another."


def read_cifar100(folder: pathlib.Path, strict: bool, notes: list[str]):
    """(images uint8 (60000, 32, 32, 3), fine labels, coarse labels, fine names, coarse names), train then test."""
    path = user_files.require_file(folder, TARBALL, WHERE_FROM)
    user_files.check_md5(path, TARBALL_MD5, strict, notes)
    parts = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for name in ("train", "test", "meta"):
                try:
                    member = tar.extractfile(f"cifar-100-python/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise UserFileError(f"{path} has no cifar-100-python/{name}: it is not CIFAR-100's python tarball. Put {WHERE_FROM} there.")
                parts[name] = pickle.load(member, encoding="latin1")
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise UserFileError(
            f"{path} is not a readable .tar.gz ({type(error).__name__}: {error}); it is damaged or truncated. Put {WHERE_FROM} there."
        ) from error
    images, fine, coarse = [], [], []
    for name in ("train", "test"):
        part = parts[name]
        if not isinstance(part, dict) or not {"data", "fine_labels", "coarse_labels"} <= set(part):
            raise UserFileError(f"{path}: cifar-100-python/{name} lacks 'data', 'fine_labels' or 'coarse_labels'. Put {WHERE_FROM} there.")
        data = np.asarray(part["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise UserFileError(f"{path}: cifar-100-python/{name} 'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072).")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # stored channel-major
        fine.append(user_files.check_labels(path, part["fine_labels"], len(data), f"{name} fine_labels"))
        coarse.append(user_files.check_labels(path, part["coarse_labels"], len(data), f"{name} coarse_labels"))
    meta = parts["meta"]
    if not isinstance(meta, dict) or not {"fine_label_names", "coarse_label_names"} <= set(meta):
        raise UserFileError(f"{path}: cifar-100-python/meta lacks 'fine_label_names' or 'coarse_label_names'.")
    return np.concatenate(images), np.concatenate(fine), np.concatenate(coarse), list(meta["fine_label_names"]), list(meta["coarse_label_names"])


class _CifarFewShot(user_files.UserFilesBuilder):
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="32px", description="CIFAR-100 images, 32 x 32 x 3.")]
    IMAGE_SHAPE = (32, 32, 3)

    def split_classes(self, fine_names, coarse_of_fine, coarse_names) -> dict[str, list[int]]:
        raise NotImplementedError

    def read_sources(self, folder: pathlib.Path, notes: list[str]) -> dict[str, user_files.SplitSource]:
        images, fine, coarse, fine_names, coarse_names = read_cifar100(folder, self._strict, notes)
        coarse_of_fine = {}
        for f, c in zip(fine.tolist(), coarse.tolist()):
            if coarse_of_fine.setdefault(f, c) != c:
                raise UserFileError(f"{TARBALL}: fine class {fine_names[f]!r} has images under two superclasses; the file is damaged.")
        sources = {}
        for split, classes in self.split_classes(fine_names, coarse_of_fine, coarse_names).items():
            chosen = np.flatnonzero(np.isin(fine, classes))
            labels = np.searchsorted(np.array(classes), fine[chosen])
            user_files.check_count(f"{self.name} {split} images", len(chosen), 600 * len(classes), self._strict, notes, "The tarball is incomplete.")
            sources[split] = user_files.SplitSource([str(fine_names[c]) for c in classes], labels.astype(np.int64), user_files.chunked(images[chosen]))
        return sources


class CifarFs(_CifarFewShot):
    """CIFAR-FS: CIFAR-100 split by class, 64 / 16 / 20 classes x 600 images, 32 x 32 x 3."""

    EXPECTED_CLASSES = {"train": 64, "validation": 16, "test": 20}

    def split_classes(self, fine_names, coarse_of_fine, coarse_names):
        index = {str(name): i for i, name in enumerate(fine_names)}
        missing = [name for names in CIFAR_FS_CLASSES.values() for name in names if name not in index]
        if missing:
            raise UserFileError(f"{TARBALL}: its class names lack {', '.join(missing[:5])}: it is not CIFAR-100. Put {WHERE_FROM} in the manual folder.")
        return {split: sorted(index[name] for name in names) for split, names in CIFAR_FS_CLASSES.items()}


class Fc100(_CifarFewShot):
    """FC100: CIFAR-100 split by superclass (12 / 4 / 4), 60 / 20 / 20 classes x 600 images, 32 x 32 x 3."""

    EXPECTED_CLASSES = {"train": 60, "validation": 20, "test": 20}

    def split_classes(self, fine_names, coarse_of_fine, coarse_names):
        if len(coarse_names) != 20:
            raise UserFileError(f"{TARBALL}: {len(coarse_names)} superclasses where CIFAR-100 has 20: it is not CIFAR-100.")
        return {split: sorted(f for f, c in coarse_of_fine.items() if c in superclasses) for split, superclasses in FC100_SUPERCLASSES.items()}
