"""benchmarks.image_baselines: which learner runs a command names, and how a finished run is paired with a
main run (on the saved H200 ProtoNet run, against a main run made up here)."""

import json
import pathlib

import numpy as np
import pytest

from benchmarks import image_baselines

SAVED_RUN = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "device_image_learners_runs" / "protonet_1"


def test_learner_runs_are_named_by_method_and_shots():
    assert image_baselines.parse_learners("maml:1, metasgd,maml:1") == [("maml", 1), ("metasgd", 1), ("metasgd", 5)]
    assert len(image_baselines.parse_learners(",".join(image_baselines.LEARNERS))) == 10
    for bad in ("", "reptile", "anil:2"):
        with pytest.raises(ValueError):
            image_baselines.parse_learners(bad)
    command = image_baselines.learner_command("maml", 5, pathlib.Path("w/maml_5shot"), ["--config.dataset.data_dir=d"])
    assert command[-4:] == ["--workdir", "w/maml_5shot", "--config.dataset.data_dir=d", "--config.episodes.shots=(5,)"]


def made_up_main(folder: pathlib.Path, digest: str, metadiff: np.ndarray, ridge: np.ndarray) -> pathlib.Path:
    folder.mkdir()
    results = {"test_episodes_sha256": {"1": digest}, "paired_against": {"1": "ridge"}, "config": {"episodes": {"ways": 5}}}
    (folder / "results.json").write_text(json.dumps(results))
    np.savez(folder / "per_episode_accuracy.npz", metadiff_1shot=metadiff, ridge_1shot=ridge)
    return folder


def test_a_finished_learner_is_paired_per_episode_on_the_same_episodes_only(tmp_path):
    saved = json.loads((SAVED_RUN / "results.json").read_text())
    with np.load(SAVED_RUN / "per_episode_accuracy.npz") as data:
        protonet = data["protonet_1shot"]
    digest = saved["test_episodes_sha256"]["1"]
    metadiff, ridge = np.clip(protonet + 0.2, 0, 1), np.full_like(protonet, 0.4)
    main = made_up_main(tmp_path / "main", digest, metadiff, ridge)
    row, values = image_baselines.paired_row("protonet", 1, SAVED_RUN, main)
    np.testing.assert_array_equal(values, protonet)
    assert row["accuracy_percent"] == pytest.approx(100 * protonet.mean(), abs=0.006)
    assert row["vs_metadiff_points"] == pytest.approx(100 * (protonet - metadiff).mean(), abs=0.006)
    assert row["vs_rival_points"] == pytest.approx(100 * (protonet - 0.4).mean(), abs=0.006) and row["rival"] == "ridge"
    record = json.loads((SAVED_RUN / "protonet_1shot_validation.json").read_text())
    assert (row["outer_steps_run"], row["best_step"]) == (record["steps_run"], record["best_step"])
    assert row["training_minutes"] == round(saved["stage_seconds"]["protonet 1-shot"] / 60, 1) > 0

    other = made_up_main(tmp_path / "other", "0" * len(digest), metadiff, ridge)
    with pytest.raises(SystemExit, match="tested on other 1-shot episodes"):
        image_baselines.paired_row("protonet", 1, SAVED_RUN, other)


def test_a_bad_learner_is_named_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["image_baselines", "--main", str(tmp_path), "--learners", "maml:3"])
    with pytest.raises(SystemExit) as stopped:
        image_baselines.main()
    assert stopped.value.code == 2 and "unknown learner run 'maml:3'" in capsys.readouterr().err
