"""Reading and checking benchmark files that users bring, and the tfds builder they share.

Nothing is downloaded: miniImageNet, tieredImageNet, CIFAR-FS / FC100 and Omniglot are built from files the
user puts in tfds' manual folder (`<data_dir>/downloads/manual`, or `--config.dataset.manual_dir`). Every
file is checked before it is used, and a problem names the file, says what is wrong with it and where the
right one goes. The commonest one, a web page saved under the data file's name (a Google Drive quota or
virus-scan warning), is recognised as such.

`strict` (the default) accepts only the official release: known checksums where they are fixed, and the
published class and image counts. With `strict=False` (`--config.dataset.strict=False`) a file with the
right containers, keys, dtypes and shapes but other counts is built too (a subset, a re-packed copy, or the
fake files of the tests), and the dataset's metadata says that it is not the official release.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pathlib
import pickle
import zipfile
from typing import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
import tqdm

SPLITS = ("train", "validation", "test")


class UserFileError(ValueError):
    """A user's data file that is missing, damaged or of another format; the message says how to fix it."""


def describe_html(path: pathlib.Path) -> str | None:
    """"an HTML page (...)" when the file is a saved web page, else None."""
    with open(path, "rb") as file:
        head = file.read(2048).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<!--")) or b"<html" in head[:512]:
        hint = " (Google Drive's quota or virus-scan page)" if b"google" in head else ""
        return f"an HTML page{hint}, not data: the download saved a web page under the file's name"
    return None


def require_file(folder: pathlib.Path, name: str, where_from: str) -> pathlib.Path:
    """`folder/name`, checked to exist, be non-empty and not be a web page."""
    path = folder / name
    fix = f"Put {where_from} at {path}."
    if not path.is_file():
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        seen = f" The folder holds: {', '.join(present[:8])}." if present else f" The folder {folder} is missing or empty."
        raise UserFileError(f"Missing {name}.{seen} {fix}")
    size = path.stat().st_size
    if size == 0:
        raise UserFileError(f"{path} is empty (0 bytes): an interrupted download. {fix}")
    html = describe_html(path)
    if html:
        raise UserFileError(f"{path} ({size:,} bytes) is {html}. Download it again (in a browser, confirming any warning page). {fix}")
    return path


def md5(path: pathlib.Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: pathlib.Path, expected: str, strict: bool, notes: list[str]) -> None:
    """Compares the file's md5 with the official release's; refuses a mismatch when strict, else notes it."""
    actual = md5(path)
    if actual == expected:
        return
    message = f"{path.name} has md5 {actual}, not the official release's {expected}"
    if strict:
        raise UserFileError(
            f"{path}: {message}: the file is damaged or another version. Download the official file again, or build "
            "from it anyway with --config.dataset.strict=False (the dataset then records that it is unofficial)."
        )
    notes.append(message)


def check_count(what: str, actual: int, expected: int, strict: bool, notes: list[str], fix: str) -> None:
    if actual == expected:
        return
    message = f"{what}: {actual:,}, where the official release has {expected:,}"
    if strict:
        raise UserFileError(f"{message}. {fix} Or build from these files anyway with --config.dataset.strict=False.")
    notes.append(message)


def load_pickle(path: pathlib.Path, where_from: str):
    """A pickle written by Python 2 or 3 (Python 2 byte strings are read as latin-1, as the peers' loaders do)."""
    for encoding in ("ASCII", "latin1"):
        try:
            with open(path, "rb") as file:
                return pickle.load(file, encoding=encoding)
        except UnicodeDecodeError:
            continue
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, MemoryError) as error:
            raise UserFileError(
                f"{path} is not a readable pickle ({type(error).__name__}: {error}); it is damaged or truncated. Put {where_from} there."
            ) from error
    raise UserFileError(f"{path} is not a readable pickle (text in an unknown encoding). Put {where_from} there.")


def check_images(path: pathlib.Path, images, shape: tuple[int, ...], key: str) -> np.ndarray:
    """An image array of dtype uint8 and per-image shape `shape`, or a UserFileError that says what it is."""
    if not isinstance(images, np.ndarray):
        raise UserFileError(f"{path}: {key!r} is a {type(images).__name__}, not an array of images.")
    if images.dtype != np.uint8 or images.ndim != len(shape) + 1 or images.shape[1:] != shape:
        raise UserFileError(f"{path}: {key!r} is {images.dtype} {images.shape}; expected uint8 (N, {', '.join(map(str, shape))}).")
    return images


def check_labels(path: pathlib.Path, labels, count: int, key: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != count or not np.issubdtype(labels.dtype, np.integer):
        raise UserFileError(f"{path}: {key!r} is {labels.dtype} {labels.shape}; expected {count} integer labels, one per image.")
    return labels


def _read_npy_header(member, path: pathlib.Path):
    """(shape, fortran order, dtype) from an .npy stream, leaving it at the first data byte."""
    try:
        version = np.lib.format.read_magic(member)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"unsupported .npy format version {version}")
        return readers[version](member)
    except ValueError as error:
        raise UserFileError(f"{path} holds a damaged .npy array ({error}).") from error


class NpyMember:
    """One array of an .npz file, read in row chunks without loading it whole (tieredImageNet's train images
    are 9.5 GB). Works for stored and deflated members alike."""

    def __init__(self, path: pathlib.Path, key: str, where_from: str):
        self.path, self.key = path, key
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise UserFileError(f"{path} is not a readable .npz (zip) file ({error}); it is damaged or truncated. Put {where_from} there.") from error
        members = [name.removesuffix(".npy") for name in self._zip.namelist()]
        if key not in members:
            raise UserFileError(f"{path} has no array {key!r} (it holds {', '.join(members) or 'nothing'}). Put {where_from} there.")
        with self._zip.open(f"{key}.npy") as member:
            self.shape, fortran, self.dtype = _read_npy_header(member, path)
        if fortran:
            raise UserFileError(f"{path}: array {key!r} is stored in Fortran order; save it in C order (np.ascontiguousarray).")

    def chunks(self, rows: int = 2048) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) chunks in file order."""
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        with self._zip.open(f"{self.key}.npy") as member:
            _read_npy_header(member, self.path)
            for start in range(0, self.shape[0], rows):
                count = min(rows, self.shape[0] - start)
                data = member.read(count * row_bytes)
                if len(data) != count * row_bytes:
                    raise UserFileError(
                        f"{self.path}: array {self.key!r} ends after {start + len(data) // row_bytes} of {self.shape[0]} rows: the file is truncated."
                    )
                yield start, np.frombuffer(data, self.dtype).reshape(count, *self.shape[1:])


@dataclasses.dataclass
class SplitSource:
    """One split as read from the user's files: its class names, every image's label (0 .. classes - 1, in
    any order) and a reader of its images in that same order, in (first index, chunk) pieces."""

    class_names: list[str]
    labels: np.ndarray
    read_images: Callable[[], Iterator[tuple[int, np.ndarray]]]


def class_order_keys(labels: np.ndarray) -> np.ndarray:
    """tfds keys that write a split's records grouped by class, whatever order the files list them in.

    With shuffling disabled tfds sorts records by key, spilling them to 1,000 disk buckets by the key's top
    bits once a split passes 1 GB. Keys 0, 1, 2, ... would all fall in bucket 0, which is then sorted in
    memory whole (9.5 GB for tieredImageNet's train split); spreading each record's class-order rank over the
    128-bit key range fills the buckets evenly, so building needs about 1 GB of memory at any size.
    """
    rank = np.empty(len(labels), np.int64)
    rank[np.argsort(labels, kind="stable")] = np.arange(len(labels))
    shift = 128 - max(1, int(len(labels) - 1).bit_length())
    return np.array([int(r) << shift for r in rank], dtype=object)


class UserFilesBuilder(tfds.core.GeneratorBasedBuilder):
    """A few-shot benchmark built from files in the manual folder: uint8 images and int32 labels, every split's
    records grouped by class (what `datasets.load_split` reads), with metadata: class names and sizes per split,
    whether the files are the official release, and what differs from it."""

    IMAGE_SHAPE: tuple[int, ...] = ()
    EXPECTED_CLASSES: dict[str, int] = {}

    def __init__(self, *, strict: bool = True, workers: int | None = None, **kwargs):
        """`strict`: accept only the official files (see the module docstring). `workers` is unused (the files
        are read, not rendered); it is taken so every builder is made the same way."""
        del workers
        self._strict = strict
        super().__init__(**kwargs)

    def image_shape(self) -> tuple[int, ...]:
        return self.IMAGE_SHAPE

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=self.image_shape(), dtype=np.uint8),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def read_sources(self, folder: pathlib.Path, notes: list[str]) -> dict[str, SplitSource]:
        """Checks the user's files in `folder` and returns each split's source; problems go in `notes` (not strict)."""
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        try:
            folder = pathlib.Path(dl_manager.manual_dir)
        except AssertionError as error:  # tfds' own "does not exist or is empty", with our instructions
            raise UserFileError(str(error)) from error
        notes: list[str] = []
        sources = self.read_sources(folder, notes)
        for split, source in sources.items():
            counted = len(np.unique(source.labels))
            if counted != len(source.class_names) or source.labels.min(initial=0) < 0 or source.labels.max(initial=-1) >= len(source.class_names):
                raise UserFileError(f"{self.name} {split}: the labels name {counted} classes, but the files list {len(source.class_names)} class names.")
            expected = self.EXPECTED_CLASSES.get(split)
            if expected:
                check_count(
                    f"{self.name} {split} classes", len(source.class_names), expected, self._strict, notes, "The files hold another split of the classes."
                )
            if len(source.class_names) < 2:
                raise UserFileError(f"{self.name} {split}: {len(source.class_names)} class(es); few-shot episodes need at least 2.")
        self.info.metadata.update(
            classes_by_split={split: list(source.class_names) for split, source in sources.items()},
            class_sizes_by_split={split: np.bincount(source.labels, minlength=len(source.class_names)).tolist() for split, source in sources.items()},
            official=not notes,
            differences_from_official=notes,
        )
        total = sum(len(source.labels) for source in sources.values())
        self._progress = tqdm.tqdm(total=total, desc=f"Converting {self.name}/{self.builder_config.name}", unit="img")
        return {split: self._generate_examples(source, split == SPLITS[-1]) for split, source in sources.items()}

    def _generate_examples(self, source: SplitSource, last: bool):
        keys = class_order_keys(source.labels)
        try:
            for start, images in source.read_images():
                for offset, image in enumerate(images):
                    index = start + offset
                    yield keys[index], {"image": np.ascontiguousarray(image), "label": np.int32(source.labels[index])}
                self._progress.update(len(images))
        finally:
            if last:
                self._progress.close()


def chunked(images: np.ndarray, rows: int = 4096) -> Callable[[], Iterator[tuple[int, np.ndarray]]]:
    """A `read_images` for images already in memory."""
    return lambda: ((start, images[start : start + rows]) for start in range(0, len(images), rows))


def decode_image(data: bytes, name: str, size: tuple[int, int], mode: str) -> np.ndarray:
    """An encoded image (PNG, JPEG) resized to `size` (width, height) with Lanczos filtering, as uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert(mode)
            if image.size != size:
                image = image.resize(size, Image.LANCZOS)
            return np.asarray(image, np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserFileError(f"{name} is not a readable image ({error}).") from error
