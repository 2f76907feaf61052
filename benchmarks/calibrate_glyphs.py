"""Calibrates how hard the default dataset's renders are, on its VALIDATION classes only.

    python -m benchmarks.calibrate_glyphs [--levels 0.75,1.0,1.1,1.25,1.5] [--drawers 600]

The default dataset (`kanjivg_glyphs/mini_28px`) has miniImageNet's shape: 64 / 16 / 20 classes of 600 renders.
Its difficulty is one number, the level of `glyph_render.hard_jitter` (stroke and glyph jitter, stroke
dropout, distractor strokes, ink and pixel noise, all scaled together). For each level this renders the 64
train and 16 validation classes in memory, pretrains the default Conv-4 on the train classes exactly as the
main job does (configs/default.py's pretraining settings), and measures the prototype classifier on 600
5-way validation episodes at 1 and 5 shots. The target is miniImageNet's Conv-4 band: 45-70 % at 1 shot and
65-85 % at 5 shots. The test classes are never rendered here.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import time

import jax
import numpy as np

from benchmarks import report
from configs import default
from launch import settings
from metadiff_jax import evaluate, pretrain
from metadiff_jax.data import episodes, glyph_render, glyphs
from metadiff_jax.data.split import ClassIndexedSplit

BAND = {1: (0.45, 0.70), 5: (0.65, 0.85)}


def render_split(codepoints: list[int], drawers: int, jitter: glyph_render.JitterConfig, seed: int, name: str) -> ClassIndexedSplit:
    render = functools.partial(glyph_render.render_character, str(glyph_render.kanjivg_dir()), drawers=drawers, size=28, seed=seed, jitter=jitter)
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        images = np.concatenate(pool.map(render, codepoints, chunksize=4))
    return ClassIndexedSplit(images, np.arange(len(codepoints) + 1) * drawers, name)


def measure(level: float, drawers: int, episodes_count: int) -> dict:
    config = default.get_config()
    dataset = next(c for c in glyphs.KanjivgGlyphs.BUILDER_CONFIGS if c.name == config.dataset.config)
    classes = glyphs.split_codepoints(dataset, glyph_render.list_codepoints(glyph_render.kanjivg_dir()))
    jitter = glyph_render.hard_jitter(level)
    start = time.perf_counter()
    train = render_split(classes["train"], drawers, jitter, dataset.seed, "calibration/train")
    validation = render_split(classes["validation"], drawers, jitter, dataset.seed, "calibration/validation")
    rendered = time.perf_counter()
    backbone = settings.make_backbone(config)
    variables, history = pretrain.pretrain(backbone, train, validation, settings.pretrain_config(config), progress=True)
    features = pretrain.make_encoder(backbone)(variables, validation.images)
    feature_split = ClassIndexedSplit(features, validation.class_starts, "calibration/validation/features")
    row = {"level": level, "train_classes": train.num_classes, "validation_classes": validation.num_classes, "renders_per_class": drawers}
    for shots in (1, 5):
        test, _ = evaluate.fixed_episodes(feature_split, episodes.EpisodeSpec(5, shots, 15), episodes_count, seed=config.episodes.test_seed)
        accuracy, ci95 = evaluate.mean_ci95(evaluate.prototype_accuracies(test, 5))
        low, high = BAND[shots]
        row[f"validation_{shots}shot_percent"] = round(100 * accuracy, 2)
        row[f"validation_{shots}shot_ci95_percent"] = round(100 * ci95, 2)
        row[f"in_band_{shots}shot"] = bool(low <= accuracy <= high)
    row["pretrain_epochs"] = config.pretrain.epochs
    row["best_epoch"] = max(history, key=lambda r: r["validation_1shot_accuracy"])["epoch"]
    row["render_minutes"] = round((rendered - start) / 60, 2)
    row["pretrain_minutes"] = round((time.perf_counter() - rendered) / 60, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="0.75,1.0,1.1,1.25,1.5", help="comma-separated difficulty levels of glyph_render.hard_jitter")
    parser.add_argument("--drawers", type=int, default=600, help="renders per class")
    parser.add_argument("--episodes", type=int, default=600, help="validation episodes per shot count")
    args = parser.parse_args()
    rows = []
    for level in (float(x) for x in args.levels.split(",")):
        rows.append(measure(level, args.drawers, args.episodes))
        print(rows[-1], flush=True)
    shipped = next(c for c in glyphs.KanjivgGlyphs.BUILDER_CONFIGS if c.name == default.get_config().dataset.config)
    report.publish(
        "calibrate_glyphs",
        rows,
        "Calibration of the default dataset's difficulty (validation classes only)",
        "Prototype classifier (cosine, Conv-4 pretrained on the 64 train classes with configs/default.py's pretraining "
        f"settings, backbone {jax.devices()[0].platform}), 5-way, 15 queries a class, "
        f"{args.episodes} validation episodes per shot count, accuracy +- 95% CI. Target band (miniImageNet's Conv-4): "
        "45-70 % at 1 shot, 65-85 % at 5 shots. The test classes are never rendered by this script. "
        f"The dataset ships with level {shipped.difficulty} (`kanjivg_glyphs/{shipped.name}`).",
    )


if __name__ == "__main__":
    main()
