"""Shared fixtures: the small glyph dataset, built once per test run in a temporary folder, whichever worker asks first."""

import contextlib
import fcntl
import functools
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


@contextlib.contextmanager
def _made_once(tmp_path_factory, worker_id: str, name: str):
    """(folder, fresh): a folder of this test session shared by its pytest-xdist workers, to be filled by the
    caller when `fresh`. The first worker to ask fills it holding a lock; the others wait, then read it. A
    session fixture is otherwise made once per worker: twice over on the 2-core VM the suite is timed on."""
    basetemp = tmp_path_factory.getbasetemp()
    folder = (basetemp if worker_id == "master" else basetemp.parent) / name
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = folder.with_name(f"{name}.made")
        fresh = not made.exists()
        folder.mkdir(exist_ok=True)
        yield folder, fresh
        made.touch()  # only once filled: a caller that failed leaves it to the next


@pytest.fixture(scope="session")
def made_once(tmp_path_factory, request):
    """`with made_once(name) as (folder, fresh):` fill `folder` when `fresh`; see _made_once."""
    # pytest-xdist's `worker_id` fixture, read so that a run without xdist (`-p no:xdist`) works too.
    worker_id = getattr(request.config, "workerinput", {}).get("workerid", "master")
    return functools.partial(_made_once, tmp_path_factory, worker_id)


@pytest.fixture(scope="session")
def small_data_dir(made_once) -> pathlib.Path:
    with made_once("tfds") as (data_dir, fresh):
        if fresh:
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
