"""The main entry point: `python -m launch.main --config configs/<name>.py --workdir DIR`.

Any config key can be overridden as `--config.key=value` (e.g. `--config.episodes.shots=5`).
Today the job builds the configured dataset if it is missing, checks that it can supply the configured
episodes, prints the classes and images of each split, and writes to DIR:
  dataset_summary.json   the summary, the dataset's identity and the config;
  data_samples.png       a grid of renders, one row a class.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (a get_config() module).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for this run's outputs.", required=True)


class UsageError(ValueError):
    """Bad input found before any long work; the message says how to fix it."""


def unknown_config_keys(argv: list[str]) -> list[str]:
    """The `--config.KEY=...` overrides whose KEY the chosen config file does not define."""
    config_file = "configs/default.py"
    overrides = []
    for arg in argv[1:]:
        if arg.startswith("--config="):
            config_file = arg.split("=", 1)[1]
        elif arg.startswith("--config."):
            overrides.append(arg[len("--config.") :].split("=", 1)[0])
    module_spec = importlib.util.spec_from_file_location("_config_under_check", config_file.split(":", 1)[0])
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config()
    unknown = []
    for key in overrides:
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                unknown.append(key)
                break
            node = node[part]
    return unknown


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a plain message instead of a traceback for an unknown config key."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:
        unknown = unknown_config_keys(argv)
        if not unknown:
            raise
        print(
            f"error: unknown config key {', '.join(unknown)}. See the config file for the keys it defines "
            "(python -m launch.main --config FILE --workdir DIR --config.KEY=VALUE).",
            file=sys.stderr,
        )
        sys.exit(2)


def prepare_workdir(path: str) -> pathlib.Path:
    workdir = pathlib.Path(path)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"Cannot write to workdir {workdir} ({error.strerror}); pass a folder you can write to with --workdir.") from error
    return workdir


def data_dir(config) -> pathlib.Path:
    import tensorflow_datasets as tfds

    return pathlib.Path(config.dataset.data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR).expanduser()


def format_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def run(config, workdir: pathlib.Path) -> None:
    from metadiff_jax.data import datasets, episodes
    from metadiff_jax import plots

    builder = datasets.build(config.dataset.name, config.dataset.config, data_dir(config), workers=config.dataset.workers or None)
    spec = episodes.EpisodeSpec(config.episodes.ways, config.episodes.shots, config.episodes.queries)
    splits = {name: datasets.load_split(builder, name) for name in datasets.SPLITS}
    for split in splits.values():
        episodes.check_spec(split, spec)

    rows = datasets.summary(builder)
    identity = datasets.dataset_identity(builder)
    print(f"\nDataset {identity} in {builder.data_dir}")
    print("(renders of real glyph stroke data from KanjiVG, not Omniglot)" if config.dataset.name == "kanjivg_glyphs" else "")
    print(format_table(rows, ["split", "classes", "images"]))
    summary = {"dataset": identity, "data_dir": str(builder.data_dir), "splits": rows, "config": config.to_dict()}
    (workdir / "dataset_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    figure = plots.sample_grid(splits["train"], rows=8, columns=10, seed=config.seed, title=identity)
    figure.savefig(workdir / "data_samples.png", dpi=100)
    print(f"\nWrote {workdir / 'dataset_summary.json'} and {workdir / 'data_samples.png'}")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from metadiff_jax.data.datasets import DatasetError
    from metadiff_jax.data.episodes import EpisodeError

    try:
        run(_CONFIG.value, prepare_workdir(_WORKDIR.value))
    except (UsageError, DatasetError, EpisodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
