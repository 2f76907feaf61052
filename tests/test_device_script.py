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
    assert all(row["finished"] and 0 <= row["accuracy_pct"] <= 100 and 1 <= row["best_step"] <= row["steps_run"] <= 2 for row in learners)
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
    learner = dry_run("image_learners", tmp_path, "--learners", "maml:3")
    assert learner.returncode == 2 and "unknown learner run 'maml:3'" in learner.stderr


@pytest.mark.parametrize("wheel", ["tensorflow-datasets==", "ml-collections==", "tensorboardX=="])
def test_the_wheels_named_for_the_gpu_machine_are_the_pinned_ones(wheel):
    from benchmarks import device

    pinned = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith(wheel)}
    assert pinned and pinned <= set(device.WHEELS)


def test_learner_rows_report_the_finished_and_how_far_the_unfinished_got(tmp_path):
    from benchmarks import device

    finished, stopped, never = tmp_path / "finished", tmp_path / "stopped", tmp_path / "never"
    for workdir in (finished, stopped, never):
        workdir.mkdir()
    checks = [{"step": 250, "validation_accuracy": 0.4}, {"step": 500, "validation_accuracy": 0.5}, {"step": 750, "validation_accuracy": 0.45}]
    (finished / "protonet_1shot_validation.json").write_text(json.dumps({"finished": True, "steps_run": 750, "best_step": 500, "validations_this_run": checks}))
    results = {"dataset": "d", "test_episodes_sha256": {"1": "list"}, "results": [{"accuracy": 0.4837, "ci95": 0.008}]}
    (finished / "results.json").write_text(json.dumps(results))
    np.savez(finished / "per_episode_accuracy.npz", protonet_1shot=np.full(3, 0.5))
    (stopped / "maml_5shot_validation.json").write_text(json.dumps({"finished": False, "steps_run": 500, "best_step": 500, "validations_this_run": checks[:2]}))
    runs = [("protonet", 1), ("maml", 5), ("metasgd", 1)]
    rows, per_episode = device.learner_rows(runs, dict(zip(runs, (finished, stopped, never))))
    assert rows[0] == {
        "method": "protonet", "shots": 1, "finished": True, "steps_run": 750, "best_step": 500, "best_validation_pct": 50.0,
        "accuracy_pct": 48.37, "ci95_pct": 0.8, "dataset": "d", "test_episodes_sha256": "list",
    }
    assert rows[1] == {
        "method": "maml", "shots": 5, "finished": False, "steps_run": 500, "best_step": 500, "best_validation_pct": 50.0,
        "accuracy_pct": None, "ci95_pct": None,
    }
    assert rows[2]["finished"] is False and rows[2]["steps_run"] == 0 and rows[2]["best_validation_pct"] is None
    assert list(per_episode) == ["protonet_1shot"]


def test_learners_run_at_most_the_number_at_once_and_those_past_the_time_limit_never_start(tmp_path, monkeypatch):
    from benchmarks import device, image_baselines

    # Each run a short process that records when it ran and leaves a finished run's validation record.
    script = (
        "import json, pathlib, sys, time; workdir = pathlib.Path(sys.argv[1]); start = time.time(); time.sleep(0.6); "
        "(workdir / 'span.json').write_text(json.dumps([start, time.time()])); "
        "(workdir / (sys.argv[2] + '_validation.json')).write_text(json.dumps({'steps_run': 1, 'best_step': 1, 'validations_this_run': []}))"
    )
    command = lambda method, shots, workdir, overrides: [sys.executable, "-c", script, str(workdir), f"{method}_{shots}shot"]
    monkeypatch.setattr(image_baselines, "learner_command", command)
    runs = [("protonet", 1), ("maml", 1), ("anil", 5)]
    rows, _ = device.image_learners(tmp_path / "data", tmp_path / "runs", runs, dry_run=False, seconds=60, at_once=2)
    spans = {run: json.loads((image_baselines.run_folder(tmp_path / "runs", *run) / "span.json").read_text()) for run in runs}
    starts, ends = [spans[run][0] for run in runs], [spans[run][1] for run in runs]
    assert max(starts) >= min(ends)  # never all three at once
    assert spans[runs[1]][0] < spans[runs[0]][1]  # but two at once
    assert [row["steps_run"] for row in rows] == [1, 1, 1]
    assert all(row["seconds_this_call"] >= 0.6 and 0 < row["steps_per_s"] <= 1 / 0.6 for row in rows)

    late = tmp_path / "late"
    rows, _ = device.image_learners(tmp_path / "data", late, runs, dry_run=False, seconds=0.3, at_once=1)
    assert (image_baselines.run_folder(late, *runs[0]) / "log.txt").exists()
    assert not image_baselines.run_folder(late, *runs[1]).exists() and not image_baselines.run_folder(late, *runs[2]).exists()
    assert [row["steps_run"] for row in rows] == [0, 0, 0]  # the first stopped before writing, the others never started
    assert rows[0]["steps_per_s"] == 0 and [(row["seconds_this_call"], row["steps_per_s"]) for row in rows[1:]] == [(0.0, None)] * 2


def test_the_kanjivg_stroke_paths_packed_for_the_gpu_machine_list_and_draw_the_same_characters(tmp_path, monkeypatch):
    import tarfile

    from benchmarks import device
    from metadiff_jax.data import glyph_render

    source = glyph_render.kanjivg_dir()
    chosen = glyph_render.list_codepoints(source)[:3]
    monkeypatch.setattr(glyph_render, "list_codepoints", lambda svg_dir: chosen)
    device.kanjivg_site(tmp_path / "kanjivg_site.tar.xz")
    monkeypatch.undo()
    with tarfile.open(tmp_path / "kanjivg_site.tar.xz") as packed:
        packed.extractall(tmp_path / "site", filter="data")
    # Unpacked into a folder on the path, it is the `kanjivg` package the dataset builder asks for.
    result = subprocess.run(
        [sys.executable, "-c", "from metadiff_jax.data import glyph_render as g; d = g.kanjivg_dir(); print(d, g.list_codepoints(d))"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{ROOT}"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == str(tmp_path / "site" / source.name) and f"{chosen}" in result.stdout
    for codepoint in chosen:
        full = glyph_render.load_strokes(str(source), codepoint)
        packed_strokes = glyph_render.parse_strokes(glyph_render.svg_path(tmp_path / "site" / source.name, codepoint).read_text())
        assert len(packed_strokes) == len(full) and all(np.array_equal(a, b) for a, b in zip(packed_strokes, full))


def test_returned_results_unpack_to_their_places_in_the_repository(tmp_path):
    import tarfile

    from benchmarks import device

    made = tmp_path / "made"
    made.mkdir()
    for name in ("device_image_learners.json", "device_image_learners_per_episode.npz", "BENCHMARKS.md"):
        (made / name).write_text(name)
    device.return_published([made / "device_image_learners.json"], tmp_path / "out")
    names = ("device_image_learners.json", "device_image_learners_per_episode.npz", "BENCHMARKS.md")
    device.return_published([made / name for name in names], tmp_path / "out")
    with tarfile.open(tmp_path / "out" / "device_results.tgz") as packed:
        assert sorted(packed.getnames()) == ["BENCHMARKS.md", *(f"benchmarks/results/{name}" for name in sorted(names[:2]))]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["device_results.tgz"]


def test_returned_learner_runs_unpack_where_a_rerun_resumes_them(tmp_path, monkeypatch):
    import io
    import tarfile

    from benchmarks import device

    runs = tmp_path / "runs"
    progress = runs / "maml_1shot" / "checkpoints" / "maml_1shot_progress"
    for step in ("250", "500"):
        (progress / step).mkdir(parents=True)
        (progress / step / "record").write_text(f"state at {step}")
    (runs / "maml_1shot" / "checkpoints" / "maml_1shot_progress_best" / "250").mkdir(parents=True)
    (runs / "maml_1shot" / "checkpoints" / "maml_1shot_progress_best" / "250" / "record").write_text("best")
    # Incompressible bytes over one part: the archive must come back split, each part under the limit.
    (runs / "maml_1shot" / "events").write_bytes(np.random.default_rng(0).bytes(3 * 2**20 // 2))
    (runs / "maml_1shot" / "run.json").write_text("{}")
    monkeypatch.setattr(device, "RETURN_PART_MIB", 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "device_learner_runs.tgz.05").write_text("a stale part from an earlier call")
    parts = device.return_learner_runs(runs, tmp_path / "out")
    assert [part.name for part in parts] == ["device_learner_runs.tgz.00", "device_learner_runs.tgz.01"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [part.name for part in parts]
    assert all(part.stat().st_size <= 2**20 for part in parts)
    joined = b"".join(part.read_bytes() for part in parts)
    with tarfile.open(fileobj=io.BytesIO(joined), mode="r:gz") as packed:
        packed.extractall(tmp_path / "repository", filter="data")
    unpacked = tmp_path / "repository" / device.LEARNER_RUNS / "maml_1shot"
    assert (unpacked / "checkpoints" / "maml_1shot_progress" / "500" / "record").read_text() == "state at 500"
    assert not (unpacked / "checkpoints" / "maml_1shot_progress" / "250").exists()
    assert (unpacked / "checkpoints" / "maml_1shot_progress_best" / "250" / "record").read_text() == "best"
    assert (unpacked / "run.json").read_text() == "{}"
