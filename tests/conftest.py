"""Shared fixtures: the small glyph dataset, built once per test run in a temporary folder."""

import os
import pathlib
import shutil
import tempfile

# The suite's time goes mostly to XLA compiling small programs. LLVM's lowest optimisation level compiles
# them about a quarter faster and runs them a little slower, which no test measures; subprocesses inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# Many tests, and the main jobs they start as subprocesses, compile the same programs: JAX's persistent
# compilation cache (keyed by the program, the flags and the versions) compiles each once per session. The
# process that starts the session makes the folder; pytest-xdist's workers and every subprocess inherit it.
MADE_COMPILATION_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if MADE_COMPILATION_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="metadiff_jax_test_compilation_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

from metadiff_jax.data import datasets  # noqa: E402


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


def pytest_sessionfinish(session, exitstatus):
    if MADE_COMPILATION_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
