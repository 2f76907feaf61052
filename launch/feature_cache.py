"""The feature cache: every split encoded once by the frozen backbone, in WORKDIR/features/<key>.npz.

The key hashes the backbone's weights and the dataset's identity, so a new backbone or other data makes a
new cache, and a cache that no longer matches (damaged, other sizes, another key inside) is refused with the
fix, never used.
"""

from __future__ import annotations

import hashlib
import pathlib
import zipfile

import jax
import numpy as np

from launch.errors import UsageError


def cache_key(variables, dataset_identity: str) -> str:
    """sha256 of the backbone's weights and the dataset's identity: a new key when either changes."""
    digest = hashlib.sha256(dataset_identity.encode())
    for leaf in jax.tree_util.tree_leaves(variables):
        digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return digest.hexdigest()[:16]


def write(path: pathlib.Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes the cache under its final name only once complete: a killed run never leaves half of one."""
    path.parent.mkdir(exist_ok=True)
    temporary = path.with_suffix(".partial.npz")
    np.savez(temporary, cache_key=np.array(key), **arrays)
    temporary.rename(path)


def load(path: pathlib.Path, key: str, splits) -> dict[str, np.ndarray]:
    """The cached features, checked against the backbone's key and the splits' sizes before use."""
    remedy = f"Delete {path} to encode the features again (nothing else is lost)."
    try:
        with np.load(path) as cached:
            stored_key = str(cached["cache_key"]) if "cache_key" in cached.files else None
            missing = [name for name in splits if name not in cached.files]
            arrays = {name: cached[name] for name in splits if name in cached.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UsageError(f"feature cache {path} is damaged ({type(error).__name__}: {error}). {remedy}") from error
    if stored_key != key:
        raise UsageError(
            f"feature cache {path} no longer matches its backbone: it was made for key {stored_key}, the backbone and dataset now give {key}. {remedy}"
        )
    if missing:
        raise UsageError(f"feature cache {path} has no features for split(s) {', '.join(missing)}. {remedy}")
    for name, split in splits.items():
        if len(arrays[name]) != len(split.images):
            raise UsageError(f"feature cache {path} holds {len(arrays[name])} {name} rows for {len(split.images)} {name} images. {remedy}")
    return arrays
