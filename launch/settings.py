"""The one mapping from a config (configs/*.py) to the library's settings and models, and the one place that
checks a config before long work starts.

Each library settings object is read from its config section by field name (metadiff_jax.config_dict) and
validates itself when built; an invalid value becomes a UsageError naming the config section and the fix.
"""

from __future__ import annotations

import os
import pathlib

from launch.errors import UsageError
from metadiff_jax import backbones, checkpoints, config_dict, denoiser, parallel, pretrain, rivals, schedule, train
from metadiff_jax import sampler as sampler_lib
from metadiff_jax.baselines import gradient, protonet
from metadiff_jax.data import episodes

METHODS = ("metadiff", *gradient.METHODS, "protonet")


def _built(where: str, make):
    """make(), with a ValueError or TypeError turned into a UsageError naming the config section `where`
    (and the key, for a field out of range)."""
    try:
        return make()
    except config_dict.FieldError as error:
        raise UsageError(f"{where}.{error}") from error
    except (ValueError, TypeError) as error:
        raise UsageError(f"{where}: {error}") from error


def data_dir(config) -> pathlib.Path:
    import tensorflow_datasets as tfds

    return pathlib.Path(config.dataset.data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR).expanduser()


def episode_specs(config) -> dict[int, episodes.EpisodeSpec]:
    shots = config.episodes.shots
    shots = (shots,) if isinstance(shots, int) else tuple(shots)
    return {k: episodes.EpisodeSpec(config.episodes.ways, int(k), config.episodes.queries) for k in shots}


def train_config(config) -> train.TrainConfig:
    return _built("metadiff", lambda: config_dict.from_section(train.TrainConfig, config.metadiff, seed=config.seed))


def sampler_config(config) -> sampler_lib.SamplerConfig:
    return _built("metadiff.sampler", lambda: config_dict.from_section(sampler_lib.SamplerConfig, config.metadiff.sampler))


def pretrain_config(config) -> pretrain.PretrainConfig:
    return _built("pretrain", lambda: config_dict.from_section(pretrain.PretrainConfig, config.pretrain, seed=config.seed))


def checkpoint_policy(config, directory: pathlib.Path, made_from: dict) -> checkpoints.CheckpointPolicy:
    return _built("checkpoint", lambda: config_dict.from_section(checkpoints.CheckpointPolicy, config.checkpoint, directory=str(directory), metadata=made_from))


def noise_schedule(config) -> schedule.NoiseSchedule:
    return _built("metadiff.schedule", lambda: schedule.make_schedule(config.metadiff.schedule, config.metadiff.timesteps))


def make_denoiser(config, dim: int):
    """The denoiser named by metadiff.denoiser, its fields read from the section of that name
    (metadiff.tcunet, metadiff.episode_transformer, ...)."""
    name = config.metadiff.denoiser
    if name not in denoiser.DENOISERS:
        raise UsageError(f"metadiff.denoiser: Unknown denoiser {name!r}; known: {', '.join(sorted(denoiser.DENOISERS))}.")
    if name not in config.metadiff:
        raise UsageError(f"metadiff.denoiser is {name!r} but the config has no section metadiff.{name} with its settings.")
    return _built(f"metadiff.{name}", lambda: config_dict.from_section(denoiser.DENOISERS[name], config.metadiff[name], dim=dim))


def rival_settings(config) -> dict:
    """The settings of every rival in rivals.rows, in that order, each read from its section rivals.<name>."""
    unknown = [name for name in config.rivals.rows if name not in rivals.RIVALS]
    if unknown:
        raise UsageError(f"rivals.rows: unknown {', '.join(unknown)}; known: {', '.join(rivals.RIVALS)} (the prototype classifier is always there).")
    return {name: _built(f"rivals.{name}", lambda: config_dict.from_section(rivals.RIVALS[name].settings, config.rivals[name])) for name in config.rivals.rows}


def make_backbone(config):
    section = config.backbone
    return _built("backbone", lambda: backbones.make_backbone(section.name, section.width, section.dtype, section.convolution))


def make_baseline(config, ways: int):
    """The image-episode learner of a baseline config (config.method is not metadiff)."""
    backbone = make_backbone(config)
    if config.method == "protonet":
        return protonet.ProtoNetLearner(backbone, ways, config.baseline.outer_lr, config.baseline.transductive)
    settings = _built("baseline", lambda: config_dict.from_section(gradient.GradientMetaConfig, config.baseline, method=config.method))
    return gradient.GradientMetaLearner(backbone, ways, settings)


def validate(config, splits: dict, mesh) -> None:
    """Every check that can fail before long work starts: each settings object built once, the few keys
    that only the launch layer reads, and the episodes against the data."""
    if config.method not in METHODS:
        raise UsageError(f"Unknown method {config.method!r}; known: {', '.join(METHODS)}.")
    for spec in episode_specs(config).values():
        for split in splits.values():
            episodes.check_spec(split, spec)
    make_backbone(config)
    _built("pretrain.batch_size", lambda: parallel.check_divisible(pretrain_config(config).batch_size, mesh, "images per pretraining batch"))
    checkpoint_policy(config, pathlib.Path("."), {})
    if config.checkpoint.validation_episodes < 0:
        raise UsageError(f"checkpoint.validation_episodes must be 0 (off) or more, got {config.checkpoint.validation_episodes}.")
    _built("parallel.style", lambda: parallel.check_style(config.parallel.style))
    if config.method != "metadiff":
        make_baseline(config, config.episodes.ways)
        _built("baseline.meta_batch", lambda: parallel.check_divisible(config.baseline.meta_batch, mesh, "episodes per step"))
        return
    rival_settings(config)
    if config.rivals.validation_episodes < 1:
        raise UsageError(f"rivals.validation_episodes must be at least 1, got {config.rivals.validation_episodes}.")
    if config.metadiff.evaluate not in ("final", "best"):
        raise UsageError(f"metadiff.evaluate must be final or best, got {config.metadiff.evaluate!r}.")
    if config.metadiff.evaluate == "best" and not (config.checkpoint.validation_episodes and config.metadiff.evaluate_ema):
        raise UsageError(
            "metadiff.evaluate = best tests the EMA parameters best on validation: it needs checkpoint.validation_episodes > 0 and metadiff.evaluate_ema."
        )
    make_denoiser(config, 1)
    noise = noise_schedule(config)
    training = train_config(config)
    _built("metadiff.sampler", lambda: sampler_config(config).plan(noise))
    _built("metadiff.query_loss", lambda: training.query_loss.check(noise))
    _built("metadiff.batch_size", lambda: parallel.check_divisible(training.batch_size, mesh, "episodes per step"))
