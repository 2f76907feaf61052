"""Per-episode random keys: episode i of a stream always gets fold_in(rng, i).

A key that depends on the episode's index alone, not on its position in a batch, makes a sample or a
training loss the same whichever other episodes share its batch, device or host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def episode_keys(rng, episode_ids):
    """`(E,)` episode indices -> `(E,)` keys, fold_in(rng, index) each."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.asarray(episode_ids))


def first_episodes(rng, count: int, first: int = 0):
    """Keys of episodes first .. first + count - 1 (`first` may be traced, e.g. a device's offset)."""
    return episode_keys(rng, first + jnp.arange(count))
