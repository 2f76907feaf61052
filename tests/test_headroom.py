"""benchmarks.headroom's estimators of a class mean from its support examples."""

import numpy as np

from benchmarks import headroom


def test_support_is_grouped_by_label_whatever_its_order():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(3), 4))
    features = labels[:, None] * 10.0 + rng.normal(size=(12, 2))
    grouped = headroom.support_by_class(features[None], labels[None], 3)
    assert grouped.shape == (1, 3, 4, 2)
    np.testing.assert_allclose(grouped[0].mean(axis=(1, 2)), [0.0, 10.0, 20.0], atol=1.5)
    np.testing.assert_allclose(np.sort(grouped[0, 1, :, 0]), np.sort(features[labels == 1, 0]))


def test_robust_estimates_ignore_one_far_outlier_the_mean_follows():
    points = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [100.0, 100.0]])
    assert np.linalg.norm(points.mean(axis=0)) > 20
    assert np.linalg.norm(headroom.geometric_median(points)) < 0.5
    np.testing.assert_allclose(headroom.without_farthest(points), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(headroom.ROBUST["coordinate median"](points), [0.0, 0.0])


def test_spread_separates_within_and_between_class_distances():
    from metadiff_jax.data.split import ClassIndexedSplit

    features = np.array([[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0]])
    split = ClassIndexedSplit(features, np.array([0, 2, 4]), "toy")
    np.testing.assert_allclose(headroom.class_means(split), [[0.0, 0.0], [4.0, 0.0]])
    assert headroom.spread(split) == {"within_class_sq_dist": 1.0, "between_class_sq_dist": 4.0, "within_over_between": 0.25}
