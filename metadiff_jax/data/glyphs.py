"""`kanjivg_glyphs`: the embedded default dataset, handwriting-like renders of KanjiVG stroke data.

Every distinct KanjiVG character is a class; each class has `drawers` renders (see `glyph_render`).
Classes are split into disjoint train / validation / test sets (64 / 16 / 20 %, seeded). Records are
written in class order (shuffling disabled, integer keys class * drawers + drawer), so a split read back
in file order is already grouped by class. No TensorFlow is needed to build or read it.

These are renders of real glyph stroke data, not Omniglot: results on it are not Omniglot numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from metadiff_jax.data import glyph_render, lookalikes

SPLITS = ("train", "validation", "test")
# The difficulty of mini_28px, set on validation classes by `python -m benchmarks.calibrate_glyphs` so that the
# default Conv-4's prototypes land in miniImageNet's band (BENCHMARKS.md, calibration section).
MINI_DIFFICULTY = 1.1

_DESCRIPTION = """\
Renders of the KanjiVG stroke data (every distinct character a class), each drawn by several simulated
"drawers" with per-stroke jitter, a small random affine warp and a random pen width: an Omniglot-like
few-shot dataset that ships with the code. White ink on black, uint8.
"""
_CITATION = """\
@misc{kanjivg, author = {Ulrich Apel and the KanjiVG contributors}, title = {KanjiVG},
  howpublished = {\\url{https://kanjivg.tagaini.net}}, note = {CC BY-SA 3.0}}
"""
_LICENSE = "Stroke data: KanjiVG, Creative Commons Attribution-Share Alike 3.0 (CC BY-SA 3.0)."


@dataclasses.dataclass
class GlyphsConfig(tfds.core.BuilderConfig):
    """What is rendered: the image size, how many classes (None: every character), drawers, seed."""

    image_size: int = 28
    num_classes: int | None = None
    drawers: int = 20
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.64, 0.16, 0.20)
    # How hard the renders are: the level of glyph_render.hard_jitter (0: the light jitter of 1.0.0).
    difficulty: float = 0.0

    @property
    def jitter(self) -> glyph_render.JitterConfig:
        return glyph_render.hard_jitter(self.difficulty)


def split_codepoints(config: GlyphsConfig, codepoints: list[int], groups: list[list[int]] | None = None) -> dict[str, list[int]]:
    """The codepoints of each split: a seeded choice of `num_classes` characters, then a seeded split that
    keeps every group of look-alike characters (data.lookalikes) in one split.

    Split sizes are round(fraction x classes). Groups of look-alikes are placed first, largest first, each
    in a split drawn with probability proportional to the room it has left (among those it fits in); then
    the single characters fill what is left, in seeded order. `groups` (of the chosen characters) are
    computed when not given. Each split's list is sorted, so its label k is its k-th smallest codepoint.
    """
    rng = np.random.Generator(np.random.Philox(key=np.array([config.seed, 0x5EED], dtype=np.uint64)))
    chosen = np.asarray(codepoints)
    if config.num_classes is not None:
        if not 3 <= config.num_classes <= len(codepoints):
            raise ValueError(
                f"num_classes={config.num_classes} is out of range: KanjiVG has {len(codepoints)} characters "
                "and each of the three splits needs at least one."
            )
        chosen = np.sort(rng.choice(chosen, size=config.num_classes, replace=False))
    if groups is None:
        groups = lookalikes.lookalike_groups(chosen)
    train_fraction, validation_fraction, _ = config.split_fractions
    num_train = int(round(train_fraction * len(chosen)))
    num_validation = int(round(validation_fraction * len(chosen)))
    room = np.array([num_train, num_validation, len(chosen) - num_train - num_validation])
    members: dict[str, list[int]] = {split: [] for split in SPLITS}
    multi = [groups[i] for i in rng.permutation(len(groups)) if len(groups[i]) > 1]
    singles = [groups[i][0] for i in rng.permutation(len(groups)) if len(groups[i]) == 1]
    for group in sorted(multi, key=len, reverse=True):
        fits = np.flatnonzero(room >= len(group))
        if not len(fits):
            raise ValueError(f"a group of {len(group)} look-alike characters fits in no split of {tuple(room)} places left.")
        split = int(rng.choice(fits, p=room[fits] / room[fits].sum()))
        members[SPLITS[split]] += group
        room[split] -= len(group)
    for split, count in zip(SPLITS, room):
        members[split] += singles[:count]
        singles = singles[count:]
    return {split: sorted(int(c) for c in members[split]) for split in SPLITS}


class KanjivgGlyphs(tfds.core.GeneratorBasedBuilder):
    """Handwriting-like renders of KanjiVG characters; classes split 64/16/20 % into train/validation/test."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "2.0.0": "Look-alike characters (data.lookalikes) kept in one split; the mini_28px config.",
    }
    BUILDER_CONFIGS = [
        GlyphsConfig(
            name="mini_28px",
            num_classes=100,
            drawers=600,
            difficulty=MINI_DIFFICULTY,
            description="miniImageNet's shape: 100 characters (64 / 16 / 20), 600 hard renders each, 28 x 28.",
        ),
        GlyphsConfig(name="28px", description="Every KanjiVG character (6,703 classes), 20 drawers, 28 x 28."),
        GlyphsConfig(name="84px", image_size=84, description="Every character, 20 drawers, 84 x 84."),
        GlyphsConfig(name="small", num_classes=100, description="100 characters, 20 drawers, 28 x 28 (tests)."),
    ]
    DEFAULT_CONFIG_NAME = "28px"

    def __init__(self, *, workers: int | None = None, **kwargs):
        """`workers`: processes that render in parallel (default: every core). Changes no byte written."""
        self._workers = workers or os.cpu_count() or 1
        super().__init__(**kwargs)

    @functools.cached_property
    def codepoints_by_split(self) -> dict[str, list[int]]:
        return split_codepoints(self.builder_config, glyph_render.list_codepoints(glyph_render.kanjivg_dir()))

    @property
    def all_codepoints(self) -> list[int]:
        """Every class of this config, sorted (the characters chosen before they were split)."""
        return sorted(c for codepoints in self.codepoints_by_split.values() for c in codepoints)

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "codepoint": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "drawer": tfds.features.Tensor(shape=(), dtype=np.int32),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://kanjivg.tagaini.net",
            citation=_CITATION,
            license=_LICENSE,
            metadata=tfds.core.MetadataDict(
                classes_by_split={s: [chr(c) for c in cps] for s, cps in self.codepoints_by_split.items()},
                codepoints_by_split=self.codepoints_by_split,
                # Groups of look-alike characters among the classes (data.lookalikes), each kept in one split.
                lookalike_groups=[
                    "".join(chr(c) for c in group) for group in lookalikes.lookalike_groups(self.all_codepoints) if len(group) > 1
                ],
                drawers=self.builder_config.drawers,
                seed=self.builder_config.seed,
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded: the stroke data is an installed package.
        total = self.builder_config.drawers * sum(len(c) for c in self.codepoints_by_split.values())
        self._progress = tqdm.tqdm(total=total, desc=f"Rendering {self.name}/{self.builder_config.name}", unit="img")
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        config = self.builder_config
        codepoints = self.codepoints_by_split[split]
        render = functools.partial(
            glyph_render.render_character,
            str(glyph_render.kanjivg_dir()),
            drawers=config.drawers,
            size=config.image_size,
            seed=config.seed,
            jitter=config.jitter,
        )
        workers = min(self._workers, len(codepoints))
        # Workers are spawned, not forked: the parent may already run JAX's threads, which fork can deadlock.
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            renders = pool.imap(render, codepoints, chunksize=8) if pool else map(render, codepoints)
            for label, (codepoint, images) in enumerate(zip(codepoints, renders)):
                for drawer, image in enumerate(images):
                    yield label * config.drawers + drawer, {
                        "image": image,
                        "label": np.int32(label),
                        "codepoint": np.int32(codepoint),
                        "drawer": np.int32(drawer),
                    }
                self._progress.update(len(images))
        finally:
            if pool:
                pool.terminate()
            if split == SPLITS[-1]:
                self._progress.close()
