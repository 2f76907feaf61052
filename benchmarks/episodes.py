"""Episode sampling speed: episodes/s for index plans plus image gathers, from a split held in memory and
from its record files on disk (random access, `--config.dataset.in_memory=False`).

    python -m benchmarks.episodes [--data_dir DIR]

Uses the default dataset (configs/default.py's: kanjivg_glyphs/mini_28px, train split: 64 classes x 600,
28 x 28 x 1), building it if missing, and an 84 x 84 x 3 dataset in tieredImageNet's file format with random pixels (200 classes x 100
images, built in a temporary folder; the speed of reading 21 KB records is what it measures, not data).
A training step consumes one batch; sampling must cost a small fraction of it, and the training loop
also prefetches batches in a background thread.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import numpy as np

from benchmarks import report
from metadiff_jax.data import datasets, episodes, fake_files


def episodes_per_second(split, spec, batch: int, seconds: float = 1.0, repeats: int = 5) -> float:
    """Median over repeats of episodes sampled per second, each repeat sampling batches for `seconds`."""
    rates = []
    batch_index = 0
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            episodes.sample_episodes(split, spec, 0, np.arange(batch_index * batch, (batch_index + 1) * batch))
            batch_index += 1
            count += batch
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(builder, specs) -> list[dict]:
    rows = []
    for source in ("memory", "disk"):
        split = datasets.load_split(builder, "train", in_memory=source == "memory")
        for ways, shots, queries in specs:
            spec = episodes.EpisodeSpec(ways, shots, queries)
            for batch in (8, 64):
                rate = episodes_per_second(split, spec, batch)
                rows.append(
                    {
                        "dataset": split.identity,
                        "source": source,
                        "ways": ways,
                        "shots": shots,
                        "queries": queries,
                        "batch": batch,
                        "episodes_per_s": round(rate, 1),
                        "ms_per_batch": round(1e3 * batch / rate, 3),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="tfds data folder (default: tfds' default)")
    args = parser.parse_args()
    import tensorflow_datasets as tfds

    from configs import default

    dataset = default.get_config().dataset
    glyphs = datasets.build(dataset.name, dataset.config, args.data_dir or tfds.core.constants.DATA_DIR)
    rows = measure(glyphs, [(5, 1, 15), (5, 5, 15), (20, 1, 5)])
    with tempfile.TemporaryDirectory() as folder:
        manual = pathlib.Path(folder) / "manual"
        fake_files.tiered_imagenet_files(manual, classes=(200, 5, 5), per_class=100)
        tiered = datasets.build("tiered_imagenet", None, pathlib.Path(folder) / "tfds", manual=manual, strict=False)
        rows += [dict(row, dataset="tiered_imagenet format, random pixels, 84x84x3") for row in measure(tiered, [(5, 1, 15), (5, 5, 15)])]
    report.publish(
        "episodes",
        rows,
        "Episode sampling",
        "Median of 5 one-second runs; each episode is an index plan (Philox keyed by seed and episode number) "
        "plus a gather of its images, on one thread: `memory` indexes a numpy array, `disk` reads each image's "
        "record from the split's array_record files (tfds data source), as tieredImageNet's config does. The 84 x 84 x 3 "
        "rows use random pixels in tieredImageNet's format: they time reading 21 KB records, nothing else.",
    )


if __name__ == "__main__":
    main()
