"""`omniglot`: Omniglot (Lake et al. 2015), 1,623 handwritten characters from 50 alphabets, 20 drawers each,
from the two official zip files `images_background.zip` (30 alphabets, 964 characters) and
`images_evaluation.zip` (20 alphabets, 659 characters).

Split by alphabet, Lake's protocol: train = the background alphabets except 5 held out for validation (a
fixed, seeded choice recorded in the metadata); test = the evaluation alphabets. This is not the Vinyals et al.
split of 1,200 / 423 characters used by many few-shot papers (its character lists are not shipped here), so
numbers on it are not comparable to theirs. Images are resized from 105 x 105 to 28 x 28 (Lanczos) and
inverted to white ink on black, like the embedded glyph dataset. Config `28px_rotated` adds each character
rotated by 90, 180 and 270 degrees as three more classes, in every split (the usual 4x augmentation).
"""

from __future__ import annotations

import dataclasses
import pathlib
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from metadiff_jax.data import user_files
from metadiff_jax.data.user_files import UserFileError

ZIPS = {"images_background": "68d2efa1b9178cc56df9314c21c6e718", "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
CHARACTERS = {"images_background": 964, "images_evaluation": 659}
DRAWERS = 20
VALIDATION_ALPHABETS = 5
WHERE_FROM = "the official Omniglot file {} (github.com/brendenlake/omniglot, python/)"

_INSTRUCTIONS = """\
Put Omniglot's images_background.zip and images_evaluation.zip in the manual folder:
<data_dir>/downloads/manual unless --config.dataset.manual_dir names another.
"""


@dataclasses.dataclass
class OmniglotConfig(tfds.core.BuilderConfig):
    rotations: bool = False
    seed: int = 0


class Omniglot(user_files.UserFilesBuilder):
    """Omniglot characters as classes, split by alphabet (Lake's background / evaluation), 28 x 28 x 1."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [
        OmniglotConfig(name="28px", description="1,623 characters, 28 x 28."),
        OmniglotConfig(name="28px_rotated", rotations=True, description="Each character and its 3 rotations as 4 classes, 28 x 28."),
    ]
    DEFAULT_CONFIG_NAME = "28px"
    IMAGE_SHAPE = (28, 28, 1)

    def read_sources(self, folder: pathlib.Path, notes: list[str]) -> dict[str, user_files.SplitSource]:
        archives = {}
        for name, digest in ZIPS.items():
            path = user_files.require_file(folder, f"{name}.zip", WHERE_FROM.format(f"{name}.zip"))
            user_files.check_md5(path, digest, self._strict, notes)
            archives[name] = (path, _list_characters(path, name))
            user_files.check_count(f"{name}.zip characters", len(archives[name][1]), CHARACTERS[name], self._strict, notes, "The zip is incomplete.")
        background_path, background = archives["images_background"]
        alphabets = sorted({character.split("/")[0] for character in background})
        if len(alphabets) <= VALIDATION_ALPHABETS:
            raise UserFileError(f"{background_path} has {len(alphabets)} alphabets; the split holds {VALIDATION_ALPHABETS} out for validation and needs more.")
        rng = np.random.default_rng(self.builder_config.seed)
        held_out = sorted(rng.choice(alphabets, VALIDATION_ALPHABETS, replace=False).tolist())
        self.info.metadata["validation_alphabets"] = held_out
        in_validation = lambda character: character.split("/")[0] in held_out
        chosen = {
            "train": (background_path, {c: m for c, m in background.items() if not in_validation(c)}),
            "validation": (background_path, {c: m for c, m in background.items() if in_validation(c)}),
            "test": archives["images_evaluation"],
        }
        return {split: self._source(path, characters) for split, (path, characters) in chosen.items()}

    def _source(self, path: pathlib.Path, characters: dict[str, list[str]]) -> user_files.SplitSource:
        names = sorted(characters)
        turns = (0, 1, 2, 3) if self.builder_config.rotations else (0,)
        members = [(member, label * len(turns) + turn, turn) for label, name in enumerate(names) for turn in turns for member in characters[name]]
        class_names = [name + (f"/rot{90 * turn:03d}" if turn else "") for name in names for turn in turns]
        labels = np.array([label for _, label, _ in members], np.int64)

        def read_images():
            with zipfile.ZipFile(path) as archive:
                for start in range(0, len(members), 512):
                    chunk = []
                    for member, _, turn in members[start : start + 512]:
                        image = 255 - user_files.decode_image(archive.read(member), f"{path}:{member}", (28, 28), "L")
                        chunk.append(np.rot90(image, turn)[..., None])
                    yield start, np.stack(chunk)

        return user_files.SplitSource(class_names, labels, read_images)


def _list_characters(path: pathlib.Path, top: str) -> dict[str, list[str]]:
    """"Alphabet/characterNN" -> its PNG members, checked to have DRAWERS images each."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UserFileError(f"{path} is not a readable zip file ({error}); it is damaged or truncated. Put {WHERE_FROM.format(path.name)} there.") from error
    characters: dict[str, list[str]] = {}
    for name in names:
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == top and parts[3].lower().endswith(".png"):
            characters.setdefault(f"{parts[1]}/{parts[2]}", []).append(name)
    if not characters:
        raise UserFileError(
            f"{path} holds no {top}/<alphabet>/<character>/<image>.png files: it is not Omniglot's {path.name}. Put {WHERE_FROM.format(path.name)} there."
        )
    for character, members in characters.items():
        if len(members) != DRAWERS:
            raise UserFileError(f"{path}: character {character} has {len(members)} images, where every Omniglot character has {DRAWERS}; the zip is damaged.")
        members.sort()
    return characters
