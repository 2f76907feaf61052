import numpy as np
import pytest

from metadiff_jax.data import datasets, episodes

SPEC = episodes.EpisodeSpec(ways=5, shots=2, queries=3)
# The classes of episodes 0 and 12345 of seed 0 over 12 classes, as sampled with the pinned requirements.
PINNED_CLASSES = [[2, 6, 8, 4, 0], [8, 5, 0, 1, 6]]


def labelled_split(num_classes=12, per_class=(6, 9, 7)) -> datasets.ClassIndexedSplit:
    """A split whose every image holds (class, index in class), so a gathered image tells where it came from."""
    sizes = np.resize(np.asarray(per_class), num_classes)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    images = np.zeros((starts[-1], 2, 1, 1), np.uint8)
    for c in range(num_classes):
        images[starts[c] : starts[c + 1], 0, 0, 0] = c
        images[starts[c] : starts[c + 1], 1, 0, 0] = np.arange(sizes[c])
    return datasets.ClassIndexedSplit(images=images, class_starts=starts, identity="fake/labelled:1/train")


def test_shapes_and_labels(small_splits):
    batch = episodes.sample_episodes(small_splits["train"], SPEC, seed=0, episode_ids=range(4))
    assert batch.support_images.shape == (4, 10, 28, 28, 1) and batch.support_images.dtype == np.uint8
    assert batch.query_images.shape == (4, 15, 28, 28, 1)
    np.testing.assert_array_equal(batch.support_labels, np.tile([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], (4, 1)))
    np.testing.assert_array_equal(batch.query_labels[0], np.repeat(np.arange(5), 3))
    assert batch.support_labels.dtype == batch.query_labels.dtype == np.int32


def test_each_label_is_one_class_and_support_and_query_never_share_an_image():
    split = labelled_split()
    plan = episodes.sample_plan(split, SPEC, seed=3, episode_ids=range(200))
    batch = episodes.gather(split, plan)
    for e in range(200):
        assert len(set(plan.classes[e])) == SPEC.ways
        support_classes = batch.support_images[e, :, 0, 0, 0].reshape(SPEC.ways, SPEC.shots)
        query_classes = batch.query_images[e, :, 0, 0, 0].reshape(SPEC.ways, SPEC.queries)
        np.testing.assert_array_equal(support_classes, np.repeat(plan.classes[e][:, None], SPEC.shots, 1))
        np.testing.assert_array_equal(query_classes, np.repeat(plan.classes[e][:, None], SPEC.queries, 1))
        used = np.concatenate([plan.support_indices[e], plan.query_indices[e]])
        assert len(set(used)) == len(used)


def test_classes_and_images_are_drawn_evenly():
    split = labelled_split()
    plan = episodes.sample_plan(split, SPEC, seed=0, episode_ids=range(2000))
    class_counts = np.bincount(plan.classes.ravel(), minlength=split.num_classes)
    expected = 2000 * SPEC.ways / split.num_classes
    assert np.all(np.abs(class_counts - expected) < 0.15 * expected)
    label_zero_classes = np.bincount(plan.classes[:, 0], minlength=split.num_classes)
    assert label_zero_classes.min() > 0  # which class gets label 0 is random
    first_class_images = np.concatenate([plan.support_indices, plan.query_indices], 1)
    first_class_images = first_class_images[first_class_images < split.class_starts[1]]
    assert set(first_class_images) == set(range(split.class_starts[1]))


def test_same_seed_same_episodes_whatever_the_batching_or_sharding(small_splits):
    split = small_splits["train"]
    whole = episodes.sample_plan(split, SPEC, seed=7, episode_ids=range(16))
    parts = [episodes.sample_plan(split, SPEC, seed=7, episode_ids=range(s, s + 4)) for s in range(0, 16, 4)]
    for field, array in zip(episodes.EpisodePlan._fields, whole):
        np.testing.assert_array_equal(array, np.concatenate([getattr(p, field) for p in parts]))
    other_seed = episodes.sample_plan(split, SPEC, seed=8, episode_ids=range(16))
    assert not np.array_equal(whole.support_indices, other_seed.support_indices)


def test_host_shards_together_see_exactly_the_global_batches(small_splits):
    split = small_splits["train"]
    single = episodes.episode_batches(split, SPEC, seed=1, batch_size=8, first_batch=2)
    hosts = [episodes.episode_batches(split, SPEC, seed=1, batch_size=8, first_batch=2, shard_index=i, shard_count=2) for i in range(2)]
    for _ in range(3):
        global_batch = next(single)
        local = [next(host) for host in hosts]
        np.testing.assert_array_equal(global_batch.query_images, np.concatenate([b.query_images for b in local]))


def test_resumed_stream_continues_where_it_stopped(small_splits):
    split = small_splits["train"]
    stream = episodes.episode_batches(split, SPEC, seed=2, batch_size=4)
    batches = [next(stream) for _ in range(3)]
    resumed = next(episodes.episode_batches(split, SPEC, seed=2, batch_size=4, first_batch=2))
    np.testing.assert_array_equal(resumed.support_images, batches[2].support_images)


def test_pinned_episode_indices():
    # Episode e depends only on (seed, e) through Philox: pinned so that a numpy change cannot silently
    # change the test episodes behind published numbers.
    plan = episodes.sample_plan(labelled_split(), SPEC, seed=0, episode_ids=[0, 12345])
    np.testing.assert_array_equal(plan.classes, PINNED_CLASSES)


def test_prefetch_yields_the_same_batches_and_raises_producer_errors(small_splits):
    split = small_splits["train"]
    direct = episodes.episode_batches(split, SPEC, seed=4, batch_size=2)
    prefetched = episodes.prefetch(episodes.episode_batches(split, SPEC, seed=4, batch_size=2), size=3)
    for _ in range(4):
        np.testing.assert_array_equal(next(direct).support_images, next(prefetched).support_images)

    def failing():
        yield 1
        raise RuntimeError("sampler broke")

    stream = episodes.prefetch(failing())
    assert next(stream) == 1
    with pytest.raises(RuntimeError, match="sampler broke"):
        next(stream)


def test_saved_episode_list_reloads_identically(small_splits, tmp_path):
    split = small_splits["test"]
    plan = episodes.sample_plan(split, SPEC, seed=5, episode_ids=range(30))
    digest = episodes.save_plan(tmp_path / "episodes.npz", plan, split, SPEC, seed=5)
    loaded, spec, seed = episodes.load_plan(tmp_path / "episodes.npz", split)
    assert (spec, seed) == (SPEC, 5) and episodes.plan_hash(loaded) == digest
    for original, reloaded in zip(plan, loaded):
        np.testing.assert_array_equal(original, reloaded)


def test_saved_episode_list_refuses_other_data_or_damage(small_splits, tmp_path):
    split = small_splits["test"]
    plan = episodes.sample_plan(split, SPEC, seed=5, episode_ids=range(30))
    path = tmp_path / "episodes.npz"
    episodes.save_plan(path, plan, split, SPEC, seed=5)
    with pytest.raises(episodes.EpisodeError, match="lists episodes of kanjivg_glyphs/small:2.0.0/test, not of .*validation"):
        episodes.load_plan(path, small_splits["validation"])
    tampered = plan._replace(query_indices=plan.query_indices[::-1].copy())
    np.savez(path, meta=np.load(path)["meta"], **tampered._asdict())
    with pytest.raises(episodes.EpisodeError, match="damaged"):
        episodes.load_plan(path, split)
    path.write_bytes(b"<html>not an npz</html>")
    with pytest.raises(episodes.EpisodeError, match="not a readable episode list"):
        episodes.load_plan(path, split)
    with pytest.raises(episodes.EpisodeError, match="No saved episodes"):
        episodes.load_plan(tmp_path / "missing.npz", split)


def test_impossible_episodes_get_errors_that_say_the_fix(small_splits):
    test_split = small_splits["test"]
    with pytest.raises(episodes.EpisodeError, match="21-way episodes need 21 classes, but .*test has only 20. Use at most 20"):
        episodes.sample_plan(test_split, episodes.EpisodeSpec(21, 1, 1), 0, [0])
    with pytest.raises(episodes.EpisodeError, match=r"shots \+ queries = 5 \+ 16 = 21 .* has only 20. .*at most 20"):
        episodes.sample_plan(test_split, episodes.EpisodeSpec(5, 5, 16), 0, [0])
    with pytest.raises(episodes.EpisodeError, match="shots must be a positive integer"):
        episodes.EpisodeSpec(5, 0, 15)
    with pytest.raises(episodes.EpisodeError, match="multiple of the shard count"):
        next(episodes.episode_batches(test_split, SPEC, 0, batch_size=5, shard_count=2))
