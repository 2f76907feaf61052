"""The main entry point: `python -m launch.main --config configs/<name>.py --workdir DIR`.

`python -m launch.main eval --workdir DIR` evaluates the finished run in DIR again, with its own config,
models and test episodes, and checks that it reproduces DIR/results.json exactly.

Any config key can be overridden as `--config.key=value` (e.g. `--config.pretrain.epochs=10`).
The job (launch/pipeline.py, its stages in launch/stages.py): builds the dataset if missing, pretrains the backbone, caches features,
meta-trains MetaDiff per shot count, evaluates it beside the prototype classifier on fixed test episodes,
and writes to DIR: results.json, results.md, plots/, tensorboard/, checkpoints/ (orbax), features/,
test_episodes_<K>shot.npz. A rerun skips every stage already done and says so; a DIR holding a run with
another config is refused before any work.

SIGTERM or SIGINT (Ctrl-C) during meta-training saves a checkpoint and stops (exit status 128 + signal);
during any other stage it stops at once, keeping the stages already finished. Rerunning the same command
resumes. Multi-host (docs/running.md, "Scaling out"): run the same command on every host with --distributed (TPU pods and
Slurm are detected), or with --coordinator_address, --num_processes and --process_id; DIR must be a
folder every host sees.
"""

from __future__ import annotations

import importlib.util
import pathlib
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (a get_config() module).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for this run's outputs.", required=True)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Join a multi-host run, detecting the cluster (TPU pod, Slurm).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-host run that is not detected.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the multi-host run (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1 (with --coordinator_address).")


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


def join_processes() -> None:
    """jax.distributed.initialize, before any other JAX call, when the flags ask for a multi-host run."""
    explicit = {"--coordinator_address": _COORDINATOR.value, "--num_processes": _NUM_PROCESSES.value, "--process_id": _PROCESS_ID.value}
    given = [name for name, value in explicit.items() if value is not None]
    if not given and not _DISTRIBUTED.value:
        return
    if given and len(given) < 3:
        missing = ", ".join(name for name in explicit if name not in given)
        raise app.UsageError(f"{', '.join(given)} given without {missing}: a multi-host run names all three (or uses --distributed alone).")
    if given and not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
        raise app.UsageError(f"--process_id {_PROCESS_ID.value} is not in 0 .. {_NUM_PROCESSES.value - 1} (--num_processes {_NUM_PROCESSES.value}).")
    from metadiff_jax import parallel

    try:
        parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except (RuntimeError, ValueError) as error:
        hint = (
            "Check the coordinator address and that every process was started."
            if given
            else "--distributed detects TPU pods, Slurm and Open MPI only; elsewhere pass --coordinator_address, --num_processes and --process_id."
        )
        print(f"error: could not join the multi-host run ({error}). {hint}", file=sys.stderr)
        sys.exit(2)


def main(argv) -> None:
    if argv[1:] not in ([], ["eval"]):
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. The one command is `eval` (python -m launch.main eval --workdir DIR).")
    evaluate_only = argv[1:] == ["eval"]
    logging.set_verbosity(logging.WARNING)
    join_processes()
    from launch import pipeline, provenance
    from launch import workdir as workdir_lib
    from launch.errors import Irreproducible, UsageError
    from launch.signals import StopOnSignal, Stopped
    from metadiff_jax.checkpoints import CheckpointError
    from metadiff_jax.data.datasets import DatasetError
    from metadiff_jax.data.episodes import EpisodeError
    from metadiff_jax.loop import Preempted, TrainingDiverged

    provenance.this_process()  # what results.json records: the code as this process started, not as it ends
    stopper = StopOnSignal()
    stopper.install()
    try:
        # `eval` only reads a finished run: it never creates the workdir it is pointed at.
        workdir = pathlib.Path(_WORKDIR.value) if evaluate_only else workdir_lib.prepare_workdir(_WORKDIR.value)
        config = workdir_lib.recorded_config(workdir) if evaluate_only else _CONFIG.value
        pipeline.run(config, workdir, stopper, evaluate_only)
    except (UsageError, DatasetError, EpisodeError, TrainingDiverged, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Irreproducible as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (Preempted, Stopped) as stop:
        name = signal.Signals(stopper.signum).name
        where = (
            f" at meta-training step {stop.step}; checkpoint saved in {stop.directory}"
            if isinstance(stop, Preempted)
            else "; the stages finished before it are kept"
        )
        print(f"stopped by {name}{where}. Run the same command to resume.", file=sys.stderr)
        sys.exit(128 + stopper.signum)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
