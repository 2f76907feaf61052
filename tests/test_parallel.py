import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from metadiff_jax import parallel

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_one_device_and_eight_devices_train_and_evaluate_alike():
    # Fake devices must be configured before JAX starts, so the comparison runs in its own process.
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "data_parallel_check.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8 and report["batch_devices"] == [1, 8] and report["steps"] == [5, 5]
    assert report["max_param_difference"] < 1e-4
    assert report["accuracies_equal"], report


def test_padding_and_uneven_splits():
    arrays, count = parallel.pad_to_multiple((np.arange(5), np.arange(10).reshape(5, 2)), 4)
    assert count == 5 and arrays[0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4] and arrays[1].shape == (8, 2)
    mesh = parallel.make_mesh(jax.devices()[:1])
    parallel.check_divisible(3, mesh)
    with pytest.raises(ValueError, match="cannot be split evenly over 2 devices"):
        parallel.check_divisible(3, type("FakeMesh", (), {"size": 2})())
