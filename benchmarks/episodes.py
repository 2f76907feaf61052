"""Episode sampling speed: episodes/s for index plans plus image gathers, from a split held in memory.

    python -m benchmarks.episodes [--data_dir DIR]

Uses the default dataset (kanjivg_glyphs/28px, train split: 4,290 classes), building it if missing.
A training step consumes one batch; sampling must cost a small fraction of it, and the training loop
also prefetches batches in a background thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks import report
from metadiff_jax.data import datasets, episodes


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="tfds data folder (default: tfds' default)")
    args = parser.parse_args()
    import tensorflow_datasets as tfds

    builder = datasets.build("kanjivg_glyphs", "28px", args.data_dir or tfds.core.constants.DATA_DIR)
    split = datasets.load_split(builder, "train")
    rows = []
    for ways, shots, queries in [(5, 1, 15), (5, 5, 15), (20, 1, 5)]:
        spec = episodes.EpisodeSpec(ways, shots, queries)
        for batch in (8, 64):
            rate = episodes_per_second(split, spec, batch)
            rows.append(
                {
                    "dataset": split.identity,
                    "source": "memory",
                    "ways": ways,
                    "shots": shots,
                    "queries": queries,
                    "batch": batch,
                    "episodes_per_s": round(rate, 1),
                    "ms_per_batch": round(1e3 * batch / rate, 3),
                }
            )
    report.publish(
        "episodes",
        rows,
        "Episode sampling",
        "Median of 5 one-second runs; each episode is an index plan (Philox keyed by seed and episode number) "
        "plus a numpy gather of its images, on one thread.",
    )


if __name__ == "__main__":
    main()
