"""The main entry point: `python -m launch.main --config configs/<name>.py --workdir DIR`.

Any config key can be overridden as `--config.key=value` (e.g. `--config.pretrain.epochs=10`).
The job (launch/pipeline.py): builds the dataset if missing, pretrains the backbone, caches features,
meta-trains MetaDiff per shot count, evaluates it beside the prototype classifier on fixed test episodes,
and writes to DIR: results.json, results.md, plots/, tensorboard/, checkpoints/ (orbax), features/,
test_episodes_<K>shot.npz. A rerun skips every stage already done and says so; a DIR holding a run with
another config is refused before any work.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (a get_config() module).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for this run's outputs.", required=True)


def unknown_config_keys(argv: list[str]) -> list[str]:
    """The `--config.KEY=...` overrides whose KEY the chosen config file does not define."""
    config_file = "configs/default.py"
    overrides = []
    for position, arg in enumerate(argv[1:], start=1):
        if arg.startswith("--config="):
            config_file = arg.split("=", 1)[1]
        elif arg == "--config" and position + 1 < len(argv):
            config_file = argv[position + 1]
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
    except (AttributeError, KeyError):
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
    from launch.pipeline import UsageError

    workdir = pathlib.Path(path)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"Cannot write to workdir {workdir} ({error.strerror}); pass a folder you can write to with --workdir.") from error
    return workdir


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from launch import pipeline
    from metadiff_jax.data.datasets import DatasetError
    from metadiff_jax.data.episodes import EpisodeError
    from metadiff_jax.diffusion import TrainingDiverged

    try:
        pipeline.run(_CONFIG.value, prepare_workdir(_WORKDIR.value))
    except (pipeline.UsageError, DatasetError, EpisodeError, TrainingDiverged) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
