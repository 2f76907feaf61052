"""`mini_imagenet`: miniImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 class split), 64 / 16 / 20
classes of 600 images, 84 x 84 RGB, from the user's files. Two sources, one builder config each:

- `pickle` (default): the MetaOptNet / Gidaris pickles, dicts with `data` (uint8 N x 84 x 84 x 3) and
  `labels` (and usually `catname2label`):
      miniImageNet_category_split_train_phase_train.pickle, miniImageNet_category_split_val.pickle,
      miniImageNet_category_split_test.pickle
- `csv`: Ravi & Larochelle's `train.csv`, `val.csv`, `test.csv` (`filename,label` rows such as
  `n0153282900000005.jpg,n01532829`) with the images either in `images/<filename>` (any size; resized to
  84 x 84, Lanczos) or as ImageNet's training folders `train/<wnid>/<wnid>_<number>.JPEG`, where a csv name
  ending in k picks the k-th image of its class by number (the convention of the common conversion tools).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from metadiff_jax.data import user_files
from metadiff_jax.data.user_files import UserFileError

PICKLES = {
    "train": "miniImageNet_category_split_train_phase_train.pickle",
    "validation": "miniImageNet_category_split_val.pickle",
    "test": "miniImageNet_category_split_test.pickle",
}
CSVS = {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}
IMAGES_PER_CLASS = 600
_CSV_NAME = re.compile(r"^(n\d{8})(\d{8})\.jpe?g$", re.IGNORECASE)

_INSTRUCTIONS = f"""\
Put the MetaOptNet pickles ({', '.join(PICKLES.values())}) in the manual folder for the `pickle` config,
or Ravi & Larochelle's {', '.join(CSVS.values())} with an `images/` folder (or ImageNet's `train/` folders)
for the `csv` config. The manual folder is <data_dir>/downloads/manual unless --config.dataset.manual_dir
names another.
"""


@dataclasses.dataclass
class MiniImageNetConfig(tfds.core.BuilderConfig):
    source: str = "pickle"


class MiniImagenet(user_files.UserFilesBuilder):
    """miniImageNet: 64 / 16 / 20 classes x 600 images, 84 x 84 x 3, converted from the user's files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [
        MiniImageNetConfig(name="pickle", source="pickle", description="From the MetaOptNet pickle files."),
        MiniImageNetConfig(name="csv", source="csv", description="From Ravi & Larochelle's csv splits over ImageNet images."),
    ]
    DEFAULT_CONFIG_NAME = "pickle"
    IMAGE_SHAPE = (84, 84, 3)
    EXPECTED_CLASSES = {"train": 64, "validation": 16, "test": 20}

    def read_sources(self, folder: pathlib.Path, notes: list[str]) -> dict[str, user_files.SplitSource]:
        read = read_pickle_split if self.builder_config.source == "pickle" else read_csv_split
        sources = {split: read(folder, split) for split in user_files.SPLITS}
        for split, source in sources.items():
            sizes = np.bincount(source.labels)
            odd = np.flatnonzero(sizes != IMAGES_PER_CLASS)
            if len(odd):
                user_files.check_count(
                    f"miniImageNet {split}: images of class {source.class_names[odd[0]]}", int(sizes[odd[0]]), IMAGES_PER_CLASS,
                    self._strict, notes, "The file is incomplete or another version of miniImageNet.",
                )
        return sources


def read_pickle_split(folder: pathlib.Path, split: str) -> user_files.SplitSource:
    where_from = f"MetaOptNet's {PICKLES[split]}"
    path = user_files.require_file(folder, PICKLES[split], where_from)
    content = user_files.load_pickle(path, where_from)
    if not isinstance(content, dict) or not {"data", "labels"} <= set(content):
        keys = sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__
        raise UserFileError(f"{path} holds {keys}; a miniImageNet pickle is a dict with 'data' and 'labels'. Put {where_from} there.")
    images = user_files.check_images(path, content["data"], MiniImagenet.IMAGE_SHAPE, "data")
    labels = user_files.check_labels(path, content["labels"], len(images), "labels")
    # The pickles number classes over all 100 (validation 64..79, test 80..99); each split counts from 0 here.
    originals, labels = np.unique(labels, return_inverse=True)
    names_by_label = {int(label): str(name) for name, label in content.get("catname2label", {}).items()}
    names = [names_by_label.get(int(label), f"class_{int(label)}") for label in originals]
    return user_files.SplitSource(names, labels.astype(np.int64), user_files.chunked(images))


def read_csv_split(folder: pathlib.Path, split: str) -> user_files.SplitSource:
    where_from = f"Ravi & Larochelle's {CSVS[split]}"
    path = user_files.require_file(folder, CSVS[split], where_from)
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise UserFileError(f"{path} does not start with the header 'filename,label'. Put {where_from} there.")
    filenames, wnids = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not _CSV_NAME.match(row[0]) or not row[0].startswith(row[1]):
            raise UserFileError(f"{path}, line {line}: {','.join(row)!r} is not a 'nXXXXXXXXNNNNNNNN.jpg,nXXXXXXXX' row.")
        filenames.append(row[0])
        wnids.append(row[1])
    names, labels = np.unique(wnids, return_inverse=True)
    locate = _image_locator(folder, path)

    def load(name: str) -> np.ndarray:
        image_path = locate(name)
        return user_files.decode_image(image_path.read_bytes(), str(image_path), (84, 84), "RGB")

    def read_images():
        for start in range(0, len(filenames), 256):
            yield start, np.stack([load(name) for name in filenames[start : start + 256]])

    return user_files.SplitSource([str(n) for n in names], labels.astype(np.int64), read_images)


def _image_locator(folder: pathlib.Path, csv_path: pathlib.Path):
    """name in a csv -> the image file: `images/<name>`, else the k-th image of ImageNet's `train/<wnid>/`."""
    flat, imagenet = folder / "images", folder / "train"
    if flat.is_dir():
        def locate(name: str) -> pathlib.Path:
            path = flat / name
            if not path.is_file():
                raise UserFileError(f"{csv_path} lists {name}, which is not in {flat}. Put the miniImageNet images there.")
            return path
        return locate
    if imagenet.is_dir():
        listings: dict[str, list[pathlib.Path]] = {}

        def locate(name: str) -> pathlib.Path:
            wnid, number = _CSV_NAME.match(name).groups()
            if wnid not in listings:
                files = (imagenet / wnid).glob(f"{wnid}_*.JPEG")
                listings[wnid] = sorted(files, key=lambda p: int(p.stem.split("_")[1]))
            index = int(number) - 1
            if not 0 <= index < len(listings[wnid]):
                raise UserFileError(f"{csv_path} lists {name}, image {index + 1} of class {wnid}, but {imagenet / wnid} holds {len(listings[wnid])} images.")
            return listings[wnid][index]
        return locate
    raise UserFileError(f"{csv_path} names images, but neither {flat} nor {imagenet} (ImageNet's training folders) exists. Put the images in one of them.")
