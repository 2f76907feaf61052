"""A finished main run, read back for the benchmarks that study its trained denoiser: its features, its
denoiser and parameters, and the very test and validation episodes its table was made on.

`main_run(workdir, seed)` runs `python -m launch.main` there first when it holds no finished run.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any, NamedTuple

import jax
import numpy as np
from scipy import stats

from benchmarks import report
from launch import settings, stages
from launch.workdir import read_run_record
from metadiff_jax import checkpoints, evaluate, feature_splits
from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax.data import datasets, episodes
from metadiff_jax.data.split import ClassIndexedSplit

# The rivals the studies pair against: the two that have been the strongest on validation (docs/findings.md);
# ANIL and the regressor, slow and never the strongest, are left out of these runs.
RIVALS = "--config.rivals.rows=('finetuned','ridge')"


def main_run(workdir: pathlib.Path, seed: int, data_dir: str = "", config: str = "configs/default.py") -> None:
    """Runs the main job with `config` and `seed` in `workdir` unless it finished there already."""
    if (workdir / "results.json").exists():
        print(f"{workdir}: finished earlier", flush=True)
        return
    command = [sys.executable, "-m", "launch.main", "--config", config, "--workdir", str(workdir), f"--config.seed={seed}", RIVALS]
    command += [f"--config.dataset.data_dir={data_dir}"] if data_dir else []
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=report.ROOT, check=True)


class Shot(NamedTuple):
    """One shot count of a run: its spec, its MetaDiff's EMA parameters (the ones it tested), its fixed test
    episodes and the 600 validation episodes its settings were chosen on, and its rows' test accuracies."""

    spec: episodes.EpisodeSpec
    params: Any
    test: evaluate.FeatureEpisodes
    validation: evaluate.FeatureEpisodes
    per_episode: dict
    selected: dict


class Run(NamedTuple):
    config: Any
    features: dict
    denoiser: Any
    schedule: Any
    shots: dict


def load(run: pathlib.Path, data_dir: str = "") -> Run:
    """Everything of a finished run the studies need, read from its workdir (nothing is trained)."""
    config = read_run_record(run)
    if data_dir:
        config.dataset.data_dir = data_dir
    images = {name: datasets.load_split(stages.dataset(config), name, progress=False) for name in datasets.SPLITS}
    (cache,) = sorted((run / "features").glob("*.npz"))
    with np.load(cache) as arrays:
        features = {name: ClassIndexedSplit(arrays[name], images[name].class_starts, f"{images[name].identity}/features") for name in datasets.SPLITS}
    if config.metadiff.unit_scale_targets:
        features = feature_splits.scale_to_unit_targets(features)[0]
    model = settings.make_denoiser(config, features["train"].images.shape[-1])
    template = denoiser_lib.init_params(model, jax.random.PRNGKey(0))
    results = json.loads((run / "results.json").read_text())
    with np.load(run / "per_episode_accuracy.npz") as accuracies:
        per_episode = {key: accuracies[key] for key in accuracies.files}
    shots = {}
    for k, spec in settings.episode_specs(config).items():
        saved = checkpoints.restore_tree((run / "checkpoints" / f"metadiff_{k}shot").absolute(), {"params": template, "ema_params": template})
        plan = episodes.load_plan(run / f"test_episodes_{k}shot.npz", images["test"])[0]
        validation = episodes.sample_plan(features["validation"], spec, config.episodes.test_seed, np.arange(config.rivals.validation_episodes))
        shots[k] = Shot(
            spec,
            saved["ema_params"],
            evaluate.episodes_from_plan(features["test"], plan),
            evaluate.episodes_from_plan(features["validation"], validation),
            {key.removesuffix(f"_{k}shot"): values for key, values in per_episode.items() if key.endswith(f"_{k}shot")},
            results["selected_on_validation"][str(k)],
        )
    return Run(config, features, model, settings.noise_schedule(config), shots)


def pooled(rows_by_seed: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each row's per-episode accuracies averaged over the seeds (the same test episodes at every seed)."""
    names = set.intersection(*(set(rows) for rows in rows_by_seed.values()))
    return {name: np.mean([rows[name] for rows in rows_by_seed.values()], axis=0) for name in sorted(names)}


def seed_level(differences: list[float]) -> tuple[float, float]:
    """(mean over seeds, half-width of the 95 % t-interval over the seed means) of per-seed differences."""
    values = np.asarray(differences, np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
