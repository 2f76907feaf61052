"""Runs that survive, through the command line: a signal mid-run, a rerun that resumes, `eval`, damaged files."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_main import TINY, run_main

from metadiff_jax import checkpoints

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _args(data_dir, workdir, *extra):
    # One shot count: what is checked here does not depend on it, and the suite's time does.
    return ["--workdir", str(workdir), f"--config.dataset.data_dir={data_dir}", *TINY, "--config.episodes.shots=(1,)", "--config.checkpoint.every=100",
            "--config.checkpoint.validation_episodes=0", "--config.rivals.rows=()", *extra]


def _signal_when(line_start: str, args: list[str], signum=signal.SIGTERM) -> tuple[int, str, str]:
    """Runs the job and sends `signum` as soon as it prints a line starting with `line_start`."""
    command = [sys.executable, "-m", "launch.main", "--config", "configs/quick.py", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        out = []
        for line in process.stdout:
            out.append(line)
            if line.startswith(line_start):
                process.send_signal(signum)
                break
        rest, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, "".join(out) + rest, err


# Long enough that a signal sent when meta-training starts lands inside it.
STEPS = "--config.metadiff.steps=300"


@pytest.fixture(scope="module")
def straight_run(made_once, small_data_dir) -> pathlib.Path:
    """A run never interrupted, made once per session: the reference the stopped run must end equal to, and
    (copied) the finished run the damaged-file tests break."""
    with made_once("preemption_straight_run") as (folder, fresh):
        if fresh:
            completed = run_main(*_args(small_data_dir, folder / "run", STEPS))
            assert completed.returncode == 0, completed.stderr[-3000:]
    return folder / "run"


def test_sigterm_in_meta_training_saves_and_the_rerun_ends_as_an_uninterrupted_run(small_data_dir, straight_run, tmp_path):
    # The signal lands while the loop compiles or runs; either way the loop stops after its step in progress.
    returncode, _, err = _signal_when("[metadiff 1-shot] meta-training", _args(small_data_dir, tmp_path / "stopped", STEPS))
    assert returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM at meta-training step" in err and "Run the same command to resume." in err
    step = int(err.split("meta-training step ")[1].split(";")[0])
    assert (tmp_path / "stopped" / "checkpoints" / "metadiff_1shot_progress" / str(step)).is_dir()

    resumed = run_main(*_args(small_data_dir, tmp_path / "stopped", STEPS))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from the checkpoint of step {step}" in resumed.stdout and "[pretrain] done earlier" in resumed.stdout
    a, b = (np.load(run / "per_episode_accuracy.npz") for run in (straight_run, tmp_path / "stopped"))
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(np.load(straight_run / "metadiff_1shot_losses.npy"), np.load(tmp_path / "stopped" / "metadiff_1shot_losses.npy"))

    # eval: the finished run evaluated again, with its own config, reproduces its results.json exactly.
    again = subprocess.run(
        [sys.executable, "-m", "launch.main", "eval", "--workdir", str(tmp_path / "stopped")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Reproduces" in again.stdout and "exactly (2 rows)" in again.stdout

    # Tampering with results.json is caught by eval, and eval writes nothing.
    results_path = tmp_path / "stopped" / "results.json"
    results = json.loads(results_path.read_text())
    results["results"][1]["accuracy"] += 0.01
    results_path.write_text(json.dumps(results))
    tampered = subprocess.run(
        [sys.executable, "-m", "launch.main", "eval", "--workdir", str(tmp_path / "stopped")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert tampered.returncode == 1 and "does not reproduce results.json" in tampered.stderr
    assert json.loads(results_path.read_text()) == results


def test_a_signal_outside_meta_training_stops_at_once_keeping_finished_stages(small_data_dir, tmp_path):
    returncode, _, err = _signal_when("[features]", _args(small_data_dir, tmp_path / "run"), signal.SIGINT)
    assert returncode == 128 + signal.SIGINT, err[-3000:]
    assert "stopped by SIGINT; the stages finished before it are kept" in err
    resumed = run_main(*_args(small_data_dir, tmp_path / "run"))
    assert resumed.returncode == 0 and "[pretrain] done earlier" in resumed.stdout


def test_eval_of_an_unfinished_run_and_damaged_files_are_clear_errors(small_data_dir, straight_run, tmp_path):
    no_run = subprocess.run(
        [sys.executable, "-m", "launch.main", "eval", "--workdir", str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert no_run.returncode == 2 and "holds no run (no run.json)" in no_run.stderr
    assert not (tmp_path / "none").exists()  # eval reads; it does not create the workdir it was pointed at

    # (That a run from nothing repeats exactly is checked above: the stopped-and-resumed run equals the straight one.)
    workdir = tmp_path / "run"
    shutil.copytree(straight_run, workdir)  # a finished run of its own to damage
    (cache,) = (workdir / "features").glob("*.npz")
    original = cache.read_bytes()

    cache.write_bytes(original[: len(original) // 2])  # truncated
    damaged = run_main(*_args(small_data_dir, workdir, STEPS))
    assert damaged.returncode == 2 and f"feature cache {cache} is damaged" in damaged.stderr and f"Delete {cache}" in damaged.stderr

    with np.load(_restore(cache, original)) as data:  # a cache whose content was made for another backbone
        arrays = {name: data[name] for name in data.files}
    np.savez(cache, **{**arrays, "cache_key": np.array("0123456789abcdef")})
    stale = run_main(*_args(small_data_dir, workdir, STEPS))
    assert stale.returncode == 2 and "no longer matches its backbone: it was made for key 0123456789abcdef" in stale.stderr

    _restore(cache, original)
    (workdir / "checkpoints" / "metadiff_1shot" / "commit_success.txt").unlink(missing_ok=True)
    (workdir / "checkpoints" / "metadiff_1shot" / "_CHECKPOINT_METADATA").unlink()  # an unfinished stage
    unfinished = subprocess.run([sys.executable, "-m", "launch.main", "eval", "--workdir", str(workdir)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert unfinished.returncode == 2 and "has no finished MetaDiff 1-shot training" in unfinished.stderr

    out_of_range = run_main(*_args(small_data_dir, tmp_path / "other", "--config.checkpoint.every=0"))
    assert out_of_range.returncode == 2 and "checkpoint.every must be at least 1, got 0" in out_of_range.stderr


def _restore(path: pathlib.Path, content: bytes) -> pathlib.Path:
    path.write_bytes(content)
    return path


def test_a_diverging_run_is_reported_as_such_and_keeps_its_last_good_checkpoint(small_data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_main(*_args(small_data_dir, workdir, "--config.metadiff.learning_rate=1e30", "--config.checkpoint.every=1"))
    assert result.returncode == 2 and "Training diverged at step" in result.stderr, result.stderr[-2000:]
    assert "the loss or a gradient was NaN or Inf" in result.stderr
    diverged_at = int(re.search(r"diverged at step (\d+)", result.stderr).group(1))
    assert not (workdir / "results.json").exists()  # not reported as a result
    # Step 0 starts from the initial weights, so its loss and gradient are finite; the update it makes is not.
    # With a save every step, the last good state (after `diverged_at` steps) is on disk, committed, and
    # nothing later: the save still in flight when training stops is finished, not abandoned at exit.
    progress = workdir / "checkpoints" / "metadiff_1shot_progress"
    saved = [int(p.name) for p in progress.iterdir() if p.name.isdigit()]
    assert diverged_at >= 1 and max(saved) == diverged_at and checkpoints.is_saved(progress / str(diverged_at))
    assert not [p.name for p in progress.iterdir() if "tmp" in p.name]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
