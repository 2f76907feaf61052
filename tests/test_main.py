"""The command line, run as a user runs it: `python -m launch.main` in a subprocess."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.main", "--config", "configs/quick.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_main_job_prints_the_dataset_summary_and_writes_its_outputs(small_data_dir, tmp_path):
    result = run_main("--workdir", str(tmp_path / "run"), f"--config.dataset.data_dir={small_data_dir}")
    assert result.returncode == 0, result.stderr
    assert "| train | 64 | 1280 |" in result.stdout
    assert "| validation | 16 | 320 |" in result.stdout
    assert "| test | 20 | 400 |" in result.stdout
    assert "not Omniglot" in result.stdout
    summary = json.loads((tmp_path / "run" / "dataset_summary.json").read_text())
    assert summary["dataset"] == "kanjivg_glyphs/small:1.0.0"
    assert summary["config"]["episodes"]["ways"] == 5
    assert (tmp_path / "run" / "data_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_job_builds_a_missing_dataset(tmp_path):
    result = run_main("--workdir", str(tmp_path / "run"), f"--config.dataset.data_dir={tmp_path / 'data'}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "kanjivg_glyphs" / "small" / "1.0.0" / "dataset_info.json").is_file()
    assert "Rendering kanjivg_glyphs/small" in result.stderr  # the progress bar


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.episodes.wayz=3", "unknown config key episodes.wayz"),
        ("--config.dataset.name=omniglot", "Unknown dataset 'omniglot'. Known datasets: kanjivg_glyphs"),
        ("--config.dataset.config=32px", "no config '32px'. Known configs: 28px, 84px, small"),
        ("--config.episodes.ways=30", "30-way episodes need 30 classes"),
        ("--config.episodes.queries=25", "shots + queries = 1 + 25 = 26"),
    ],
)
def test_bad_input_is_a_clear_error_not_a_traceback(small_data_dir, tmp_path, override, message):
    result = run_main("--workdir", str(tmp_path / "run"), f"--config.dataset.data_dir={small_data_dir}", override)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_workdir_is_refused_before_any_work(small_data_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_main("--workdir", str(blocker / "run"), f"--config.dataset.data_dir={small_data_dir}")
    assert result.returncode == 2
    assert f"Cannot write to workdir {blocker / 'run'}" in result.stderr
