"""Shared fixtures: the small glyph dataset, built once per test run in a temporary folder."""

import os
import pathlib

# The suite's time goes mostly to XLA compiling small programs. LLVM's lowest optimisation level compiles
# them about a quarter faster and runs them a little slower, which no test measures; subprocesses inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import pytest

from metadiff_jax.data import datasets


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory) -> pathlib.Path:
    data_dir = tmp_path_factory.mktemp("tfds")
    datasets.build("kanjivg_glyphs", "small", data_dir, workers=2)
    return data_dir


@pytest.fixture(scope="session")
def small_builder(small_data_dir):
    return datasets.make_builder("kanjivg_glyphs", "small", small_data_dir)


@pytest.fixture(scope="session")
def small_splits(small_builder) -> dict:
    return {name: datasets.load_split(small_builder, name, progress=False) for name in datasets.SPLITS}
