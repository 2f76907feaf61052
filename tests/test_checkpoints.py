"""The outer loop's checkpoints: exact resume, stop on request, and checkpoints that cannot be resumed from."""

import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from metadiff_jax import checkpoints, denoiser, diffusion, loop, schedule, synthetic, train
from metadiff_jax.data import episodes

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = episodes.EpisodeSpec(5, 1, 5)


@pytest.fixture(scope="module")
def problem():
    splits = synthetic.make_splits(synthetic.SyntheticConfig(dim=16, base_examples=30))
    return denoiser.make_denoiser("tcunet", 16), schedule.linear_schedule(50), splits["train"]


def _train(problem, steps, directory=None, every=4, should_stop=None):
    model, noise, split = problem
    config = train.TrainConfig(steps=steps, batch_size=4, learning_rate=1e-3, ema_start=2, ema_decay=0.9, check_every=3)
    policy = None if directory is None else checkpoints.CheckpointPolicy(str(directory), every=every, keep=2)
    params = denoiser.init_params(model, jax.random.PRNGKey(0))
    return train.train_denoiser(model, noise, params, split, SPEC, config, progress=False, checkpoints=policy, should_stop=should_stop)


def _assert_same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_stopping_and_resuming_ends_bitwise_where_an_uninterrupted_run_ends(problem, tmp_path):
    straight, straight_losses = _train(problem, 12)
    _train(problem, 6, tmp_path / "ckpt")  # saves at step 4 and at its last step, 6
    assert sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) == [4, 6]
    shutil.rmtree(tmp_path / "ckpt" / "6")  # steps 5 and 6 lost, as after a crash
    resumed, resumed_losses = _train(problem, 12, tmp_path / "ckpt")  # resumes at step 4, trains 8 more
    assert int(resumed.step) == 12
    _assert_same(straight.params, resumed.params)
    _assert_same(straight.ema_params, resumed.ema_params)
    _assert_same(straight.opt_state, resumed.opt_state)
    np.testing.assert_array_equal(straight_losses, resumed_losses)  # the losses of steps 1-4 came back from the checkpoint


def test_a_stop_request_saves_the_step_reached_and_a_rerun_continues_from_it(problem, tmp_path):
    calls = iter(range(100))
    with pytest.raises(loop.Preempted, match="stopped at step 3; checkpoint saved in") as stopped:
        _train(problem, 12, tmp_path / "ckpt", every=100, should_stop=lambda: next(calls) == 2)
    assert stopped.value.step == 3
    resumed, _ = _train(problem, 12, tmp_path / "ckpt", every=100)
    straight, _ = _train(problem, 12)
    _assert_same(straight.params, resumed.params)


def test_only_the_latest_checkpoints_are_kept(problem, tmp_path):
    _train(problem, 12, tmp_path / "ckpt", every=2)
    assert sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) == [10, 12]


def test_a_checkpoint_of_another_model_is_refused_with_the_mismatch(problem, tmp_path):
    _, noise, split = problem
    _train(problem, 4, tmp_path / "ckpt")
    wider = denoiser.make_denoiser("tcunet", 16, time_dim=64)  # the same tree, other shapes
    config = train.TrainConfig(steps=8, batch_size=4)
    with pytest.raises(checkpoints.CheckpointError, match=r"checkpoint .*ckpt/4 holds .* of shape .* but this config needs"):
        train.train_denoiser(wider, noise, denoiser.init_params(wider, jax.random.PRNGKey(0)), split, SPEC, config, progress=False,
                             checkpoints=checkpoints.CheckpointPolicy(str(tmp_path / "ckpt")))


def test_a_damaged_checkpoint_is_named_and_nothing_is_deleted(problem, tmp_path):
    _train(problem, 8, tmp_path / "ckpt")
    latest = tmp_path / "ckpt" / "8"
    damaged = [p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 100]
    for path in damaged:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(checkpoints.CheckpointError, match=r"ckpt/8 cannot be read .* delete .*ckpt/8 to resume from the checkpoint before it"):
        _train(problem, 12, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "4").is_dir() and latest.is_dir()


def test_kill_9_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    directory = tmp_path / "ckpt"
    script = ROOT / "tests" / "scripts" / "checkpointed_training.py"
    process = subprocess.Popen([sys.executable, str(script), str(directory)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    caught_in_flight = False
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            committed = [p for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
            in_flight = [p for p in directory.iterdir() if "tmp" in p.name] if directory.is_dir() else []
            if len(committed) >= 2 and in_flight:  # a save is being written right now
                process.send_signal(signal.SIGKILL)
                caught_in_flight = True
                break
            time.sleep(0.001)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert caught_in_flight, "never saw a save in flight"
    model = denoiser.make_denoiser("tcunet", 64)
    config = train.TrainConfig(steps=1, batch_size=4)
    template_state = diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0)), diffusion.make_optimizer())
    manager = ocp.CheckpointManager(directory, item_handlers={"record": ocp.StandardCheckpointHandler()})
    template = {
        "state": template_state,
        "rng": jax.random.PRNGKey(config.seed),
        "losses": np.zeros(100_000, np.float32),
        "validation": np.zeros(100_000, np.float32),
    }
    record, step = checkpoints.restore_latest(manager, template)
    assert step >= 1 and int(record["state"].step) == step and np.all(np.isfinite(record["losses"][:step]))


def test_checkpoints_of_other_features_are_refused_and_the_best_by_validation_is_kept(problem, tmp_path):
    model, noise, split = problem
    config = train.TrainConfig(steps=8, batch_size=4, learning_rate=1e-3)
    params = denoiser.init_params(model, jax.random.PRNGKey(0))
    scores = iter([0.5, 0.9, 0.7, 0.6])
    seen = []
    validate = lambda ema_params, step: seen.append(step) or next(scores)
    policy = checkpoints.CheckpointPolicy(str(tmp_path / "ckpt"), every=2, keep=2, metadata={"features": "key-a", "shots": (1,)})
    train.train_denoiser(model, noise, params, split, SPEC, config, progress=False, checkpoints=policy, validate=validate)
    assert seen == [2, 4, 6, 8]
    assert [p.name for p in (tmp_path / "ckpt_best").iterdir() if p.name.isdigit()] == ["4"]  # validation 0.9

    same = checkpoints.CheckpointPolicy(str(tmp_path / "ckpt"), every=2, keep=2, metadata={"features": "key-a", "shots": (1,)})
    longer = dataclasses.replace(config, steps=10)
    train.train_denoiser(model, noise, params, split, SPEC, longer, progress=False, checkpoints=same)  # same metadata: resumes
    other = dataclasses.replace(same, metadata={"features": "key-b", "shots": (1,)})
    with pytest.raises(checkpoints.CheckpointError, match=r"made from another features than this run's"):
        train.train_denoiser(model, noise, params, split, SPEC, dataclasses.replace(config, steps=12), progress=False, checkpoints=other)


def test_a_baseline_resumes_bitwise_through_the_same_loop(tmp_path):
    from metadiff_jax import backbones
    from metadiff_jax.baselines import protonet

    learner = protonet.ProtoNetLearner(backbones.Conv4(channels=8), ways=3)
    images = np.random.default_rng(0).random((60, 16, 16, 1), np.float32)

    def batches_from(first_step):
        for step in range(first_step, 10**6):  # a stream that is a function of the step number
            order = np.random.default_rng(step).permutation(60)[:12].reshape(2, 6)
            labels = np.tile(np.repeat(np.arange(3, dtype=np.int32), 2), (2, 1))
            yield images[order[:, :3]], labels[:, :3], images[order], labels

    def train(steps, directory=None, should_stop=None):
        state = learner.init(jax.random.PRNGKey(0), images[:1])
        policy = None if directory is None else checkpoints.CheckpointPolicy(str(directory), every=100, keep=1)
        step = jax.jit(learner.meta_train_step)
        return loop.checkpointed_loop(
            step, state, batches_from, steps, jax.random.PRNGKey(0), check=lambda s, m: None, checkpoints=policy, should_stop=should_stop, progress=False
        )

    straight, straight_losses = train(6)
    requests = iter(range(100))
    with pytest.raises(loop.Preempted):
        train(6, tmp_path / "ckpt", should_stop=lambda: next(requests) == 2)
    resumed, resumed_losses = train(6, tmp_path / "ckpt")
    _assert_same(straight.params, resumed.params)
    _assert_same(straight.opt_state, resumed.opt_state)
    np.testing.assert_array_equal(straight_losses, resumed_losses)


def test_training_stops_when_validation_stops_rising_and_keeps_the_best_even_across_a_resume(tmp_path):
    # A toy "model": the state is a counter; validation accuracy rises until step 6, then falls.
    curve = {2: 0.3, 4: 0.5, 6: 0.8, 7: 0.7, 8: 0.7, 10: 0.75, 12: 0.6, 14: 0.9}
    step_fn = lambda state, batch, rng: (state + 1, {"loss": jax.numpy.float32(1.0)})
    batches = lambda first: iter(lambda: None, 1)

    def train(should_stop=None):
        policy = checkpoints.CheckpointPolicy(str(tmp_path / "ckpt"), every=2, keep=2)
        return loop.checkpointed_loop(
            step_fn,
            jax.numpy.int32(0),
            batches,
            20,
            jax.random.PRNGKey(0),
            check=lambda s, m: None,
            checkpoints=policy,
            validate=lambda state, step: curve[step],
            patience=3,
            should_stop=should_stop,
            progress=False,
        )

    requests = iter(range(100))
    with pytest.raises(loop.Preempted):  # stopped at step 7 (a save and a validation there too: 7 -> 0.7)
        train(should_stop=lambda: next(requests) == 6)
    state, losses = train()
    # Best 0.8 at step 6; then 0.7 (7), 0.7 (8), 0.75 (10): three without a new best -> stop at step 10, not 20.
    assert int(state) == 10 and len(losses) == 10
    best, step = checkpoints.restore_best(str(tmp_path / "ckpt"), jax.numpy.int32(0))
    assert step == 6 and int(best) == 6
    with pytest.raises(checkpoints.CheckpointError, match="holds no checkpoint"):
        checkpoints.restore_best(str(tmp_path / "none"), jax.numpy.int32(0))
