import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from process_helpers import free_port, run_processes

from metadiff_jax import parallel

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_one_device_and_eight_devices_train_and_evaluate_alike_in_both_parallel_styles():
    # Fake devices must be configured before JAX starts, so the comparison runs in its own process.
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "data_parallel_check.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8 and report["one_device_steps"] == 5
    for style in ("jit", "shard_map"):
        assert report[style]["batch_devices"] == 8 and report[style]["steps"] == 5, report
        assert report[style]["max_param_difference"] < 1e-4, report
        assert report[style]["loss_difference"] < 1e-5, report
        assert report[style]["accuracies_equal"], report


def test_pretraining_encoding_and_image_learners_on_eight_devices_compute_what_one_device_does():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "image_parallel_check.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    # Same global batch, split 8 ways: the order of the sums over the batch differs (float32 rounding, ~1e-7
    # relative), and with it, now and then, a ReLU or max-pool decision on a value within rounding of the
    # boundary, which changes that element's gradient a little. Measured: parameters within 1e-4 of one
    # device's after 2-3 SGD steps at learning rate 0.1, whose updates move them by ~1e-1. A batch norm over
    # each device's slice, a missing or doubled all-reduce, or a host reading the wrong rows changes the update
    # itself: differences of the update's order, far above the 1 % of it allowed here.
    pretraining = report["pretrain"]
    assert pretraining["steps"] == 3 and pretraining["max_loss_difference"] < 1e-5, pretraining
    assert pretraining["max_param_difference"] < 1e-2 * pretraining["max_update"], pretraining
    assert pretraining["max_batch_stats_difference"] < 1e-5, pretraining
    encoding = report["encode"]
    assert encoding["shape"] == [37, 4] and encoding["max_feature_difference"] < 1e-5 * max(1.0, encoding["feature_scale"]), encoding
    for learner in ("protonet", "maml"):
        for style in parallel.STYLES:
            outer = report[f"{learner}_{style}"]
            assert outer["steps"] == 2 and outer["max_loss_difference"] < 1e-5, (learner, style, outer)
            assert outer["max_param_difference"] < 1e-2 * outer["max_update"], (learner, style, outer)
        # One episode per device, the same program: the same accuracies, the padded last group dropped.
        assert report[f"{learner}_evaluation"] == {"episodes": 11, "accuracies_equal": True}, report


def test_padding_and_uneven_splits():
    arrays, count = parallel.pad_to_multiple((np.arange(5), np.arange(10).reshape(5, 2)), 4)
    assert count == 5 and arrays[0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4] and arrays[1].shape == (8, 2)
    mesh = parallel.make_mesh(jax.devices()[:1])
    parallel.check_divisible(3, mesh)
    with pytest.raises(ValueError, match="cannot be split evenly over 2 devices"):
        parallel.check_divisible(3, type("FakeMesh", (), {"size": 2})())


def test_two_processes_on_loopback_train_as_one_process_does(tmp_path):
    port = str(free_port())
    script = str(ROOT / "tests" / "scripts" / "multiprocess_check.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outputs = run_processes([[sys.executable, script, str(tmp_path / "two.npz"), str(i), port] for i in range(2)], timeout=180, cwd=ROOT, env=env)
    for returncode, _, err in outputs:
        assert returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outputs]
    assert [r["process"] for r in reports] == [0, 1]
    assert all(r["processes"] == 2 and r["devices"] == 2 and r["step"] == 3 for r in reports)
    alone = subprocess.run([sys.executable, script, str(tmp_path / "one.npz")], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert json.loads(alone.stdout.strip().splitlines()[-1])["processes"] == 1
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert sorted(two.files) == sorted(one.files) and len(one.files) > 10
    # The same global batches and randomness: the losses and the gradients' norms agree at every step; only
    # the order of the gradient's sum over the two halves differs (rounding, ~1e-7 relative).
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(two["grad_norms"], one["grad_norms"], rtol=1e-5)
    for name in one.files:
        # SGD moves each parameter by the learning rate times its gradient: parameters agree to the gradients'
        # rounding times 1e-2, far inside these tolerances; a wrong half-batch or a missing all-reduce is not.
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_host_slices_of_training_batches_make_up_the_global_batch():
    from metadiff_jax import diffusion, synthetic, train
    from metadiff_jax.data import episodes

    splits = synthetic.make_splits(synthetic.SyntheticConfig(dim=8, base_examples=30))
    targets = diffusion.class_mean_targets(splits["train"].images, splits["train"].class_starts)
    spec = episodes.EpisodeSpec(5, 2, 3)
    whole = next(train.training_batches(splits["train"], targets, spec, 8, seed=3, first_batch=4, with_queries=True))
    hosts = [
        next(train.training_batches(splits["train"], targets, spec, 8, seed=3, first_batch=4, shard_index=i, shard_count=4, with_queries=True))
        for i in range(4)
    ]
    for field in whole._fields:
        np.testing.assert_array_equal(getattr(whole, field), np.concatenate([getattr(h, field) for h in hosts]))


def test_training_batches_planned_in_blocks_are_the_batches_planned_one_at_a_time(monkeypatch):
    """Batch b is episodes b * batch_size ... of the stream whatever the block the host plans them in, from
    any first batch (a resumed run) and on any host's slice."""
    from metadiff_jax import diffusion, synthetic, train
    from metadiff_jax.data import episodes

    splits = synthetic.make_splits(synthetic.SyntheticConfig(dim=8, base_examples=30))
    targets = diffusion.class_mean_targets(splits["train"].images, splits["train"].class_starts)
    spec = episodes.EpisodeSpec(5, 2, 3)

    def batches(block: int, **kwargs) -> list:
        monkeypatch.setattr(train, "BLOCK_EPISODES", block)
        stream = train.training_batches(splits["train"], targets, spec, 8, seed=3, first_batch=5, with_queries=True, **kwargs)
        return [next(stream) for _ in range(7)]

    for hosts in ({}, {"shard_index": 1, "shard_count": 2}):
        one_at_a_time, blocks = batches(1, **hosts), batches(24, **hosts)
        for single, blocked in zip(one_at_a_time, blocks):
            for field in single._fields:
                np.testing.assert_array_equal(getattr(blocked, field), getattr(single, field))
    first = batches(24)[0]
    plan = episodes.sample_plan(splits["train"], spec, 3, np.arange(5 * 8, 6 * 8))
    np.testing.assert_array_equal(first.support_features, splits["train"].images[plan.support_indices])
