"""benchmarks.device, the one script a lent GPU runs, run here at tiny sizes (--dry-run) part by part: it
must be known to work before a GPU is at hand."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def dry_run(part: str, out: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.device", "--dry-run", "--parts", part, "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_kernel_rows_are_made_and_nothing_is_published(tmp_path):
    before = (ROOT / "BENCHMARKS.md").read_text()
    result = dry_run("kernels", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, key in (
        ("gpu_train_step", "ms_per_step"),
        ("gpu_sampler", "episodes_per_s"),
        ("gpu_pretrain", "images_per_s"),
        ("gpu_query_loss", "compiled_temp_bytes"),
    ):
        rows = json.loads((tmp_path / f"{name}.json").read_text())
        assert rows and all(row[key] > 0 for row in rows), (name, rows)
    assert {row["dtype"] for row in json.loads((tmp_path / "gpu_pretrain.json").read_text())} == {"float32", "bfloat16"}
    assert (ROOT / "BENCHMARKS.md").read_text() == before  # a dry run publishes nothing


def test_main_job_and_image_learners_time_every_stage_and_keep_per_episode_accuracies(tmp_path, small_data_dir):
    result = dry_run("main_job,image_learners", tmp_path, "--data-dir", str(small_data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    stages = {row["stage"]: row["seconds"] for row in json.loads((tmp_path / "device_main_job.json").read_text())}
    assert {"dataset", "pretrain", "features", "metadiff 1-shot", "regressor 1-shot", "total (wall)"} <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values()) and stages["total (wall)"] >= stages["pretrain"] > 0
    learners = json.loads((tmp_path / "device_image_learners.json").read_text())
    assert [(row["method"], row["shots"]) for row in learners] == [("protonet", 1), ("fomaml", 1)]
    assert all(0 <= row["accuracy_pct"] <= 100 and 1 <= row["best_step"] <= row["steps_run"] <= 2 for row in learners)
    with np.load(tmp_path / "device_image_learners_per_episode.npz") as per_episode:
        assert sorted(per_episode.files) == ["fomaml_1shot", "protonet_1shot"] and per_episode["protonet_1shot"].shape == (4,)


def test_the_mini_imagenet_path_runs_on_fake_files_in_the_real_format(tmp_path):
    result = dry_run("mini_imagenet", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[dataset] NOT the official release" in result.stdout
    rows = {row["stage"]: row for row in json.loads((tmp_path / "device_mini_imagenet.json").read_text())}
    assert rows["pretrain"]["images_per_s"] > 0 and rows["metadiff 1-shot"]["seconds"] > 0


def test_bad_parts_and_a_missing_data_folder_are_named(tmp_path):
    unknown = dry_run("kernels,warp_drive", tmp_path)
    assert unknown.returncode == 2 and "unknown part(s) warp_drive; known: kernels, main_job, image_learners, mini_imagenet" in unknown.stderr
    missing = dry_run("main_job", tmp_path)
    assert missing.returncode == 2 and "give --data-dir" in missing.stderr


@pytest.mark.parametrize("wheel", ["tensorflow-datasets==", "ml-collections==", "tensorboardX=="])
def test_the_wheels_named_for_the_gpu_machine_are_the_pinned_ones(wheel):
    from benchmarks import device

    pinned = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith(wheel)}
    assert pinned and pinned <= set(device.WHEELS)
