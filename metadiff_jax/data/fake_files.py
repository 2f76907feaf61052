"""Small fake files in each real benchmark format: the same containers, keys, dtypes and layout as the
official files, with few classes and images (random pixels, a colour per class). Nothing here is real data.

For tests of the builders and for benchmarks of the on-disk read path, where the real files are not at hand.
"""

from __future__ import annotations

import csv
import io
import pathlib
import pickle
import tarfile
import zipfile

import numpy as np
from PIL import Image

from metadiff_jax.data import cifar_fewshot


def _images(rng, classes: int, per_class: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """Class-major uint8 images with a per-class mean, and their labels 0..classes-1."""
    labels = np.repeat(np.arange(classes), per_class)
    means = rng.integers(40, 216, (classes, *([1] * (len(shape) - 1)), shape[-1]))
    noise = rng.integers(-40, 40, (len(labels), *shape))
    return np.clip(means[labels] + noise, 0, 255).astype(np.uint8), labels


def mini_imagenet_pickles(folder: pathlib.Path, classes=(6, 5, 5), per_class: int = 16, seed: int = 0) -> None:
    """MetaOptNet's three pickles: {'data': uint8 (N, 84, 84, 3), 'labels': list, 'catname2label': dict},
    labels numbered over all classes (validation after train, test after validation), Python 2 protocol."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for name, count in zip(("train_phase_train", "val", "test"), classes):
        images, labels = _images(rng, count, per_class, (84, 84, 3))
        order = rng.permutation(len(labels))  # the files are not grouped by class
        content = {
            "data": images[order],
            "labels": (labels[order] + offset).tolist(),
            "catname2label": {f"n{offset + c:08d}": offset + c for c in range(count)},
        }
        with open(folder / f"miniImageNet_category_split_{name}.pickle", "wb") as file:
            pickle.dump(content, file, protocol=2)
        offset += count


def mini_imagenet_csv(folder: pathlib.Path, classes=(6, 5, 5), per_class: int = 4, imagenet_layout: bool = False, seed: int = 0) -> None:
    """Ravi & Larochelle's csv files with JPEGs, in `images/` (any size) or as ImageNet's `train/<wnid>/`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for name, count in zip(("train", "val", "test"), classes):
        rows = [("filename", "label")]
        for c in range(count):
            wnid = f"n{offset + c:08d}"
            for k in range(1, per_class + 1):
                pixels = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)  # not 84 x 84: resized when built
                if imagenet_layout:
                    target = folder / "train" / wnid / f"{wnid}_{1000 + 7 * k}.JPEG"
                else:
                    target = folder / "images" / f"{wnid}{k:08d}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(target, format="JPEG")
                rows.append((f"{wnid}{k:08d}.jpg", wnid))
        with open(folder / f"{name}.csv", "w", newline="") as file:
            csv.writer(file).writerows(rows)
        offset += count


def tiered_imagenet_files(folder: pathlib.Path, classes=(6, 5, 5), per_class: int = 16, seed: int = 0) -> None:
    """MetaOptNet's {split}_images.npz ('images' uint8 (N, 84, 84, 3)) and {split}_labels.pkl ('labels',
    'label_specific_str'); train's npz is compressed, the others stored, as both occur in the wild."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for name, count in zip(("train", "val", "test"), classes):
        images, labels = _images(rng, count, per_class, (84, 84, 3))
        order = rng.permutation(len(labels))
        save = np.savez_compressed if name == "train" else np.savez
        save(folder / f"{name}_images.npz", images=images[order])
        names = [f"class {label}" for label in range(offset + count)]  # indexed by the global label
        with open(folder / f"{name}_labels.pkl", "wb") as file:
            pickle.dump({"labels": (labels[order] + offset).tolist(), "label_specific_str": names}, file, protocol=2)
        offset += count


def cifar100_tarball(folder: pathlib.Path, train_per_class: int = 4, test_per_class: int = 2, seed: int = 0) -> pathlib.Path:
    """cifar-100-python.tar.gz: cifar-100-python/{train,test,meta} pickles, 'data' uint8 (N, 3072) channel-major,
    'fine_labels', 'coarse_labels'; the real 100 class names (alphabetical) and fake superclasses (5 each)."""
    rng = np.random.default_rng(seed)
    fine_names = sorted(name for names in cifar_fewshot.CIFAR_FS_CLASSES.values() for name in names)
    coarse_of = np.arange(100) // 5

    def part(per_class: int) -> dict:
        images, labels = _images(rng, 100, per_class, (32, 32, 3))
        return {"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072), "fine_labels": labels.tolist(), "coarse_labels": coarse_of[labels].tolist()}

    members = {
        "train": part(train_per_class),
        "test": part(test_per_class),
        "meta": {"fine_label_names": fine_names, "coarse_label_names": [f"superclass_{i}" for i in range(20)]},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / cifar_fewshot.TARBALL
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def omniglot_zips(folder: pathlib.Path, alphabets=(7, 2), characters: int = 2, seed: int = 0) -> None:
    """images_background.zip / images_evaluation.zip: <top>/<Alphabet>/characterNN/<id>_NN.png, 105 x 105
    1-bit PNGs (black ink on white), 20 drawers a character."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for top, count in zip(("images_background", "images_evaluation"), alphabets):
        with zipfile.ZipFile(folder / f"{top}.zip", "w") as archive:
            for a in range(count):
                for c in range(1, characters + 1):
                    for drawer in range(1, 21):
                        ink = rng.random((105, 105)) > 0.1
                        buffer = io.BytesIO()
                        Image.fromarray(ink).convert("1").save(buffer, format="PNG")
                        archive.writestr(f"{top}/{top[7:]}_alphabet_{a}/character{c:02d}/{c:04d}_{drawer:02d}.png", buffer.getvalue())
