"""Datasets by name: build them, check they are whole, and read a split grouped by class.

This is the data layer's file I/O (with the builders it names): it takes a data folder and returns arrays,
or, for splits too big for memory, arrays read from the built record files on demand.
"""

from __future__ import annotations

import pathlib
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from metadiff_jax.data import cifar_fewshot, glyphs, mini_imagenet, omniglot, tiered_imagenet, user_files
from metadiff_jax.data.split import ClassIndexedSplit

# Dataset name -> its tfds builder class. A new dataset is one entry here.
DATASETS: dict[str, Callable[..., tfds.core.DatasetBuilder]] = {
    "kanjivg_glyphs": glyphs.KanjivgGlyphs,
    "mini_imagenet": mini_imagenet.MiniImagenet,
    "tiered_imagenet": tiered_imagenet.TieredImagenet,
    "cifar_fs": cifar_fewshot.CifarFs,
    "fc100": cifar_fewshot.Fc100,
    "omniglot": omniglot.Omniglot,
}
SPLITS = glyphs.SPLITS


class DatasetError(ValueError):
    """A dataset that is unknown, missing, half-built or corrupt; the message says how to fix it."""


def make_builder(name: str, config: str | None, data_dir: str | pathlib.Path, **kwargs) -> tfds.core.DatasetBuilder:
    """The builder of dataset `name` with builder config `config` (None: its default) under `data_dir`."""
    if name not in DATASETS:
        raise DatasetError(f"Unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}.")
    builder_class = DATASETS[name]
    known_configs = [c.name for c in builder_class.BUILDER_CONFIGS]
    if config is not None and config not in known_configs:
        raise DatasetError(
            f"Dataset {name!r} has no config {config!r}. Known configs: {', '.join(known_configs)} "
            f"(set it with --config.dataset.config=NAME)."
        )
    return builder_class(config=config, data_dir=str(data_dir), file_format="array_record", **kwargs)


def dataset_identity(builder: tfds.core.DatasetBuilder) -> str:
    return f"{builder.name}/{builder.builder_config.name}:{builder.version}"


def manual_dir(data_dir: str | pathlib.Path, manual: str | pathlib.Path | None = None) -> pathlib.Path:
    """Where builders of user files look for them: `manual`, else tfds' `<data_dir>/downloads/manual`."""
    return pathlib.Path(manual).expanduser() if manual else pathlib.Path(data_dir) / "downloads" / "manual"


def build(
    name: str,
    config: str | None,
    data_dir: str | pathlib.Path,
    workers: int | None = None,
    manual: str | pathlib.Path | None = None,
    strict: bool = True,
) -> tfds.core.DatasetBuilder:
    """Builds the dataset if it is not built yet (with a progress bar) and returns its checked builder.

    Datasets made from user files read them from `manual_dir(data_dir, manual)`; `strict` accepts only the
    official files (see `user_files`).
    """
    kwargs = {"strict": strict} if issubclass(DATASETS.get(name, object), user_files.UserFilesBuilder) else {}
    builder = make_builder(name, config, data_dir, workers=workers, **kwargs)
    if not builder.is_prepared():
        # tfds' own bars count examples with no total; the builder shows one bar with an ETA instead.
        tfds.disable_progress_bar()
        try:
            download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir(data_dir, manual)))
            builder.download_and_prepare(file_format="array_record", download_config=download_config)
        except user_files.UserFileError as error:
            raise DatasetError(f"Cannot build {name}/{builder.builder_config.name}: {error}") from error
        finally:
            tfds.enable_progress_bar()
    check_complete(builder)
    return builder


def check_complete(builder: tfds.core.DatasetBuilder) -> None:
    """Raises DatasetError unless every split's record files are present and non-empty."""
    identity = dataset_identity(builder)
    data_path = pathlib.Path(builder.data_dir)
    if not builder.is_prepared():
        interrupted = sorted(data_path.parent.glob(f"incomplete.*{builder.version}"))
        hint = (
            f" An interrupted build was left in {interrupted[0]}: delete it and build again."
            if interrupted
            else ""
        )
        raise DatasetError(
            f"Dataset {identity} is not built in {data_path.parent.parent.parent}.{hint} Build it with "
            f"`python -m launch.main --config configs/default.py --workdir runs/default` "
            f"(it builds the default dataset when missing) or `metadiff_jax.data.datasets.build(...)`."
        )
    for split in SPLITS:
        if split not in builder.info.splits:
            raise DatasetError(f"Dataset {identity} in {data_path} has no {split!r} split: delete {data_path} and build again.")
        for path in builder.info.splits[split].filepaths:
            path = pathlib.Path(path)
            if not path.is_file() or path.stat().st_size == 0:
                raise DatasetError(
                    f"Dataset {identity} in {data_path} is half-built or damaged: record file {path.name} of split "
                    f"{split!r} is missing or empty. Delete {data_path} and build again."
                )


class RecordImages:
    """A split's images read from its record files on demand: indexing with an integer, a slice or an integer
    array of any shape returns uint8 numpy arrays, as indexing the whole array in memory would."""

    def __init__(self, source, image_shape: tuple[int, ...]):
        self._source = source
        self.shape = (len(source), *image_shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index)
        flat = index.reshape(-1)
        if np.any((flat < 0) | (flat >= len(self))):
            raise IndexError(f"image index out of range 0 .. {len(self) - 1}")
        out = np.empty((len(flat), *self.shape[1:]), np.uint8)
        for row, record in enumerate(self._source.__getitems__(flat.tolist())):
            out[row] = record["image"]
        return out.reshape(*index.shape, *self.shape[1:])


def class_sizes(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
    """The number of images of each class of a split, from the builder's stored metadata (no records read)."""
    metadata = builder.info.metadata
    if "class_sizes_by_split" in metadata:
        return np.asarray(metadata["class_sizes_by_split"][split], np.int64)
    return np.full(len(metadata["classes_by_split"][split]), metadata["drawers"], np.int64)


def load_split(builder: tfds.core.DatasetBuilder, split: str, progress: bool = True, in_memory: bool = True) -> ClassIndexedSplit:
    """A split grouped by class (records are stored in class order): read whole into memory, or, with
    `in_memory=False`, read image by image from the record files when indexed (for splits larger than memory)."""
    if split not in SPLITS:
        raise DatasetError(f"Unknown split {split!r}; splits are {', '.join(SPLITS)}.")
    check_complete(builder)
    identity = f"{dataset_identity(builder)}/{split}"
    if not in_memory:
        sizes = class_sizes(builder, split)
        source = builder.as_data_source(split=split)
        if len(source) != int(sizes.sum()):
            raise DatasetError(f"{identity}: {len(source)} records where its metadata counts {int(sizes.sum())}; delete {builder.data_dir} and build again.")
        class_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return ClassIndexedSplit(images=RecordImages(source, builder.info.features["image"].shape), class_starts=class_starts, identity=identity)
    try:
        source = builder.as_data_source(split=split)
        num_images = len(source)
        images = np.empty((num_images, *builder.info.features["image"].shape), np.uint8)
        labels = np.empty((num_images,), np.int64)
        chunk = 4096
        for start in tqdm.trange(0, num_images, chunk, desc=f"Reading {identity}", unit="chunk", disable=not progress, leave=False):
            records = source.__getitems__(list(range(start, min(start + chunk, num_images))))
            for offset, record in enumerate(records):
                images[start + offset] = record["image"]
                labels[start + offset] = record["label"]
    except (OSError, RuntimeError, ValueError) as error:
        raise DatasetError(
            f"Could not read split {split!r} of {identity} from {builder.data_dir}: {error}. The files are damaged; "
            f"delete {builder.data_dir} and build again."
        ) from error
    if num_images and np.any(np.diff(labels) < 0):
        raise DatasetError(f"{identity}: records are not in class order; delete {builder.data_dir} and build again.")
    num_classes = int(labels[-1]) + 1 if num_images else 0
    class_starts = np.searchsorted(labels, np.arange(num_classes + 1)).astype(np.int64)
    if np.any(np.diff(class_starts) == 0):
        raise DatasetError(f"{identity}: some class has no images; delete {builder.data_dir} and build again.")
    return ClassIndexedSplit(images=images, class_starts=class_starts, identity=identity)


def summary(builder: tfds.core.DatasetBuilder) -> list[dict[str, int | str]]:
    """Rows of (split, classes, images) from the dataset's stored info (every builder stores classes_by_split)."""
    rows = []
    classes = builder.info.metadata["classes_by_split"]
    for split in SPLITS:
        rows.append({"split": split, "classes": len(classes[split]), "images": int(builder.info.splits[split].num_examples)})
    return rows
