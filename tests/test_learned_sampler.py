"""A learned few-step sampler: its coefficients trained through the sampler by the query loss, saved and
restored like any model, and read back by the one sampler loop."""

import re

import doc_examples
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import checkpoints, denoiser, diffusion, learned_sampler, query_loss, sampler, schedule, synthetic, train
from metadiff_jax.data import episodes

SPEC = episodes.EpisodeSpec(5, 1, 5)


def test_learning_lowers_the_query_loss_and_the_coefficients_restore_and_sample_alike(tmp_path):
    splits = synthetic.make_splits(synthetic.SyntheticConfig(dim=16, base_examples=40, noise_scale=3.0))
    model = denoiser.make_denoiser("tcunet", 16, time_dim=16, condition="normalized_gradient_and_prototypes", anchor="prototypes")
    params = denoiser.init_params(model, jax.random.PRNGKey(0))
    noise = schedule.linear_schedule(100)
    config = learned_sampler.LearnedSamplerConfig(steps=4, train_steps=80, batch_size=8, learning_rate=3e-2)
    learned, losses = learned_sampler.train_sampler(model, noise, params, splits["train"], SPEC, config, progress=False)
    assert losses.shape == (80,) and np.all(np.isfinite(losses))
    # On 64 held-out base-class episodes: the query loss the coefficients were trained on falls.
    targets = diffusion.class_mean_targets(splits["train"].images, splits["train"].class_starts)
    held_out = next(train.training_batches(splits["train"], targets, SPEC, 64, seed=99, with_queries=True))
    loss = query_loss.make_query_loss(model, noise, config.query_loss)
    held_out_loss = lambda c: float(loss(params, *held_out[:2], *held_out[3:], jax.random.PRNGKey(5), 5, 0, c))
    initial = sampler.initial_coefficients(noise, config.sampler)
    assert held_out_loss(learned) < 0.95 * held_out_loss(initial)
    assert float(jnp.abs(learned.eps_scale - initial.eps_scale).max()) > 1e-3  # it moved
    checkpoints.save_tree(tmp_path / "learned", learned)
    restored = checkpoints.restore_tree(tmp_path / "learned", initial)
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, learned)
    task = sampler.make_sample_task(model, noise, config.sampler)
    support, labels = splits["test"].images[:5], np.arange(5)
    a = task(params, support, labels, jax.random.PRNGKey(1), 5, coefficients=learned)
    b = task(params, support, labels, jax.random.PRNGKey(1), 5, coefficients=jax.tree_util.tree_map(jnp.asarray, restored))
    np.testing.assert_array_equal(a, b)


def test_bad_learned_sampler_settings_are_refused():
    with pytest.raises(ValueError, match="method 'euler' is unknown"):
        learned_sampler.LearnedSamplerConfig(method="euler")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        learned_sampler.LearnedSamplerConfig(steps=0)


def test_the_differentiable_samplers_pages_example_runs(capsys):
    """docs/differentiable_samplers.md's example as printed, with its sizes shrunk (each shrink must find its
    text): register a sampler, differentiate the query loss through it, learn its coefficients, evaluate."""
    doc_examples.run_example(
        "docs/differentiable_samplers.md",
        {
            "synthetic.SyntheticConfig()": "synthetic.SyntheticConfig(dim=16, base_examples=40, novel_examples=20)",
            "dim=64": "dim=16",
            "schedule.linear_schedule(1000)": "schedule.linear_schedule(100)",
            "train.TrainConfig(steps=2000)": "train.TrainConfig(steps=20)",
            "train_steps=500": "train_steps=20",
            "count=600": "count=8",
        },
        registered_sampler="scaled_ddim",
    )
    printed = capsys.readouterr().out
    scales = re.search(r"d loss / d scales: \[([^\]]*)\]", printed).group(1).split()
    assert len(scales) == 10 and all(np.isfinite(float(s)) for s in scales) and any(float(s) != 0 for s in scales)
    assert printed.count("MethodResult(method=") == 2 and "learned-10" in printed
