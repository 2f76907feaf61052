import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import backbones as bb
from metadiff_jax import pretrain as pt


def test_augment_shifts_content_without_changing_shape():
    image = jnp.zeros((1, 8, 8, 1)).at[0, 4, 4, 0].set(1.0)
    images = jnp.repeat(image, 64, axis=0)
    shifted = pt.augment(jax.random.PRNGKey(0), images, shift=2, flip=False)
    assert shifted.shape == images.shape
    positions = {tuple(np.argwhere(np.asarray(s[..., 0]) == 1.0)[0]) for s in shifted}
    assert len(positions) > 10 and all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in positions)
    np.testing.assert_array_equal(pt.augment(jax.random.PRNGKey(0), images, shift=0, flip=False), images)


def test_rotations_are_quarter_turns():
    image = jnp.arange(16.0).reshape(1, 4, 4, 1)
    rotated = pt.rotate_batch(jnp.repeat(image, 4, 0), jnp.arange(4))
    for k in range(4):
        np.testing.assert_array_equal(rotated[k, ..., 0], np.rot90(np.asarray(image[0, ..., 0]), k))


def test_encoder_batches_match_one_forward_pass():
    backbone = bb.make_backbone("conv4")
    variables = bb.init_variables(backbone, jax.random.PRNGKey(0), (28, 28, 1))
    images = np.random.default_rng(0).integers(0, 256, (37, 28, 28, 1), dtype=np.uint8)
    encoded = pt.make_encoder(backbone, batch_size=16)(variables, images)
    np.testing.assert_allclose(encoded, backbone.apply(variables, images, train=False), rtol=1e-4, atol=1e-5)


def test_pretraining_learns_and_keeps_the_best_validation_epoch(small_splits):
    # Half-width Conv-4 for 2 epochs: the full width for 3 took 70 s of the suite and asserts nothing more.
    config = pt.PretrainConfig(epochs=2, batch_size=64, validation_episodes=50, rotation=True)
    variables, history = pt.pretrain(bb.make_backbone("conv4", width=32), small_splits["train"], small_splits["validation"], config, progress=False)
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["train_accuracy"] > 1 / 64  # above chance over 64 classes
    assert max(h["validation_1shot_accuracy"] for h in history) > 0.5  # 5-way: chance is 0.2
    assert set(variables) == {"params", "batch_stats"}


def test_feature_cache_key_follows_the_backbone_and_the_dataset():
    from launch.feature_cache import cache_key as feature_cache_key

    variables = {"params": {"w": np.ones(3, np.float32)}}
    changed = {"params": {"w": np.array([1, 1, 1.5], np.float32)}}
    key = feature_cache_key(variables, "kanjivg_glyphs/28px:1.0.0")
    assert key == feature_cache_key({"params": {"w": np.ones(3, np.float32)}}, "kanjivg_glyphs/28px:1.0.0")
    assert key != feature_cache_key(changed, "kanjivg_glyphs/28px:1.0.0")
    assert key != feature_cache_key(variables, "kanjivg_glyphs/28px:1.1.0")


def test_pretraining_stopped_after_an_epoch_resumes_exactly_from_its_checkpoint(small_splits, tmp_path):
    from metadiff_jax import checkpoints

    config = pt.PretrainConfig(epochs=2, batch_size=128, validation_episodes=20)
    backbone = bb.make_backbone("conv4", width=8)
    straight, straight_history = pt.pretrain(backbone, small_splits["train"], small_splits["validation"], config, progress=False)

    class Stop(Exception):
        pass

    manager = checkpoints.checkpoint_manager(str(tmp_path / "progress"), max_to_keep=1)

    def save_and_stop(progress):
        checkpoints.save_record(manager, progress.epochs_done, pt.progress_record(progress))
        manager.wait_until_finished()
        raise Stop  # as a signal would, right after the first epoch

    with pytest.raises(Stop):
        pt.pretrain(backbone, small_splits["train"], small_splits["validation"], config, progress=False, on_epoch=save_and_stop)
    template = pt.progress_record(pt.initial_progress(backbone, small_splits["train"], config))
    record, step = checkpoints.restore_latest(manager, template)
    resume = pt.progress_from_record(record)
    assert step == 1 and resume.epochs_done == 1 and resume.history == straight_history[:1]
    resumed, resumed_history = pt.pretrain(backbone, small_splits["train"], small_splits["validation"], config, progress=False, resume=resume)
    assert resumed_history == straight_history
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
