"""launch/provenance.py: the code version and config hash that runs and benchmark rows record, and the refusal
of runs made by other code when they are aggregated."""

import json
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from launch import provenance
from launch.errors import UsageError


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    """A git repository with one code file and one file of each kind of output, committed."""
    root = tmp_path / "checkout"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "tests").mkdir()
    for path in ("code.py", "BENCHMARKS.md", "docs/running.md", "benchmarks/results/a.json", "tests/test_code.py"):
        (root / path).write_text("0\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    return root


def _finished_run(path, **made_by):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"results": [], **made_by}))
    return path


def test_code_version_is_kept_by_output_only_commits_and_changed_by_code_edits(checkout):
    first = provenance.code_version(checkout)
    assert len(first) == 12 and first != provenance.UNKNOWN
    for path in ("BENCHMARKS.md", "docs/running.md", "benchmarks/results/a.json", "tests/test_code.py"):
        (checkout / path).write_text("1\n")
    assert provenance.code_version(checkout) == first  # outputs and tests edited, not committed: no result changes
    first_commit = provenance.commit(checkout)
    _git(checkout, "commit", "-qam", "results and docs")
    assert provenance.code_version(checkout) == first and provenance.commit(checkout) != first_commit
    (checkout / "code.py").write_text("1\n")
    edited = provenance.code_version(checkout)
    assert edited != first and provenance.commit(checkout).endswith("+changes")
    _git(checkout, "add", "code.py")
    assert provenance.code_version(checkout) == edited  # staging changes nothing
    _git(checkout, "commit", "-qm", "code")
    assert provenance.code_version(checkout) == edited  # the same code, now committed
    (checkout / "code.py").unlink()
    assert provenance.code_version(checkout) not in (first, edited)


def test_outside_a_git_checkout_the_identities_are_unknown(tmp_path, checkout):
    assert provenance.commit(tmp_path) == provenance.code_version(tmp_path) == provenance.UNKNOWN
    # A folder inside a checkout (an installed copy in a .venv there) is not that checkout's code.
    (checkout / "inner").mkdir()
    assert provenance.commit(checkout / "inner") == provenance.code_version(checkout / "inner") == provenance.UNKNOWN


def test_commit_is_marked_changed_by_code_edits_but_not_by_the_outputs_a_benchmark_writes(checkout):
    head = provenance.commit(checkout)
    assert len(head) == 12 and not head.endswith("+changes")
    (checkout / "BENCHMARKS.md").write_text("1\n")
    (checkout / "benchmarks" / "results" / "a.json").write_text("1\n")
    assert provenance.commit(checkout) == head
    (checkout / "code.py").write_text("1\n")
    assert provenance.commit(checkout) == head + "+changes"


def test_a_process_records_the_code_it_started_with_not_code_edited_or_committed_while_it_ran(checkout, monkeypatch):
    monkeypatch.setattr(provenance, "_STARTED_WITH", {})
    config = ml_collections.ConfigDict({"seed": 0})
    started = provenance.made_by(config, checkout)
    assert (started["commit"], started["code_version"]) == (provenance.commit(checkout), provenance.code_version(checkout))
    (checkout / "code.py").write_text("1\n")
    _git(checkout, "commit", "-qam", "code edited while a run goes on")
    assert provenance.code_version(checkout) != started["code_version"] and provenance.commit(checkout) != started["commit"]
    assert provenance.made_by(config, checkout) == started


def test_config_sha256_ignores_key_order_and_tells_values_apart():
    config = ml_collections.ConfigDict({"seed": 0, "metadiff": {"steps": 10, "width": 4}})
    reordered = ml_collections.ConfigDict({"metadiff": {"width": 4, "steps": 10}, "seed": 0})
    assert provenance.config_sha256(config) == provenance.config_sha256(reordered)
    assert len(provenance.config_sha256(config)) == 16
    reordered.metadiff.steps = 11
    assert provenance.config_sha256(config) != provenance.config_sha256(reordered)


def test_run_json_records_the_code_and_config_and_a_resume_by_other_code_is_warned_not_refused(tmp_path, monkeypatch, capsys):
    from configs import default
    from launch import workdir

    # Fixed identities: the working tree may be edited while the test runs.
    monkeypatch.setattr(provenance, "commit", lambda root=provenance.ROOT: "c0ffee")
    monkeypatch.setattr(provenance, "code_version", lambda root=provenance.ROOT: "feedfacecafe")
    monkeypatch.setattr(provenance, "_STARTED_WITH", {})
    config = default.get_config()
    workdir.record_run(tmp_path, config)
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["commit"], record["code_version"], record["config_sha256"]) == ("c0ffee", "feedfacecafe", provenance.config_sha256(config))
    workdir.check_run_identity(tmp_path, config)
    assert "warning" not in capsys.readouterr().out
    (tmp_path / "run.json").write_text(json.dumps({**record, "code_version": "0123456789ab"}))
    workdir.check_run_identity(tmp_path, config)
    assert "started by code version 0123456789ab, today's is feedfacecafe" in capsys.readouterr().out


def test_a_resumed_baseline_keeps_the_processes_that_trained_it_before_and_names_them_in_its_row(tmp_path):
    from benchmarks import image_baselines
    from launch import stages

    record_path = tmp_path / "maml_5shot_validation.json"
    assert stages.earlier_processes(record_path, 0) == []
    # A record from before records listed processes: its steps are kept, the code that ran them is not known.
    record_path.write_text(json.dumps({"finished": False, "steps_run": 441, "best_step": 441, "validations_this_run": []}))
    assert stages.earlier_processes(record_path, 0) == []  # no checkpoint: the run starts over
    before = stages.earlier_processes(record_path, 441)
    assert before == [{"commit": provenance.NOT_RECORDED, "from_step": 0, "to_step": 441, "minutes": None}]
    second = {"commit": "4add57b00000", "from_step": 441, "to_step": 1000, "minutes": 15.5}
    record_path.write_text(json.dumps({"finished": False, "steps_run": 1000, "best_step": 750, "validations_this_run": [], "processes": [*before, second]}))
    assert stages.earlier_processes(record_path, 1000) == [*before, second]
    assert image_baselines.trained_by({"processes": [*before, second]}) == "steps 0-441 (commit not recorded); steps 441-1000 at 4add57b00000 in 15.5 min"
    assert image_baselines.trained_by({"steps_run": 3}) == provenance.NOT_RECORDED


def test_check_runs_refuses_runs_made_by_other_code_naming_each_and_lists_them_when_reused(tmp_path, checkout):
    today = provenance.code_version(checkout)
    same = _finished_run(tmp_path / "same", commit="abc", code_version=today)
    older = _finished_run(tmp_path / "older")
    other = _finished_run(tmp_path / "other", commit="def+changes", code_version="0123456789ab")
    assert provenance.check_runs([same], reuse=False, root=checkout) == []
    with pytest.raises(UsageError) as refused:
        provenance.check_runs([same, older, other], reuse=False, root=checkout)
    message = str(refused.value)
    assert f"{older}: commit not recorded, code_version not recorded" in message
    assert f"{other}: commit def+changes, code_version 0123456789ab" in message
    assert str(same) + ":" not in message and "--reuse" in message
    reused = provenance.check_runs([same, older, other], reuse=True, root=checkout)
    assert reused == [
        {"path": str(older), "commit": "not recorded", "code_version": "not recorded"},
        {"path": str(other), "commit": "def+changes", "code_version": "0123456789ab"},
    ]
    # Without a checkout nothing says the code was the same: every run is another code's.
    assert len(provenance.check_runs([same], reuse=True, root=tmp_path)) == 1


def test_headline_and_the_ablation_suite_refuse_finished_runs_of_other_code_before_running_anything(tmp_path, monkeypatch, capsys):
    from benchmarks import headline
    from configs import default
    from launch import ablate

    _finished_run(tmp_path / "headline" / "seed0", commit="abc", code_version="0123456789ab")
    monkeypatch.setattr(sys, "argv", ["headline", "--seeds", "0", "--workdir", str(tmp_path / "headline")])
    with pytest.raises(SystemExit, match="seed0: commit abc, code_version 0123456789ab"):
        headline.main()
    main_run = _finished_run(tmp_path / "main")
    (main_run / "run.json").write_text(json.dumps({"config": json.loads(default.get_config().to_json())}))
    np.savez(main_run / "per_episode_accuracy.npz", metadiff_1shot=np.ones(4))
    assert ablate.main(["--main", str(main_run), "--workdir", str(tmp_path / "suite"), "--only", "ema_off"]) == 2
    assert f"{main_run}: commit not recorded, code_version not recorded" in capsys.readouterr().err
    assert not (tmp_path / "suite").exists()


def test_check_finished_runs_exits_naming_a_run_of_other_code_and_prints_the_runs_it_reuses(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(provenance, "code_version", lambda root=provenance.ROOT: "feedfacecafe")
    same = _finished_run(tmp_path / "same", commit="abc", code_version="feedfacecafe")
    other = _finished_run(tmp_path / "other", commit="def", code_version="0123456789ab")
    (tmp_path / "unfinished").mkdir()
    # Folders without a results.json are yet to run, by today's code: neither refused nor listed.
    runs = [same, other, tmp_path / "unfinished", tmp_path / "missing"]
    with pytest.raises(SystemExit) as refused:
        provenance.check_finished_runs(runs, reuse=False)
    message = str(refused.value.code)
    assert message.startswith("error: 1 finished run(s)") and f"{other}: commit def, code_version 0123456789ab" in message and "--reuse" in message
    assert capsys.readouterr().out == ""
    assert provenance.check_finished_runs(runs, reuse=True) == [{"path": str(other), "commit": "def", "code_version": "0123456789ab"}]
    assert capsys.readouterr().out == f"Reused runs made by other code (--reuse): {other} (commit def, code_version 0123456789ab).\n"


def test_publish_records_the_command_commit_and_code_version_in_every_row(tmp_path, monkeypatch):
    from benchmarks import report

    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "this_process", lambda root: {"commit": "c0ffee", "code_version": "feedfacecafe"})
    monkeypatch.setattr(sys, "argv", ["demo.py", "--seeds", "0,1"])
    report.publish("demo", [{"a": 1}, {"a": 2}], "Demo")
    rows = json.loads((tmp_path / "benchmarks" / "results" / "demo.json").read_text())
    assert rows == [{"a": a, "commit": "c0ffee", "code_version": "feedfacecafe", "command": "python -m benchmarks.demo --seeds 0,1"} for a in (1, 2)]
    monkeypatch.setattr(sys, "argv", ["demo.py"])
    report.publish("demo", [{"a": 1}], "Demo", module="benchmarks.other")
    assert json.loads((tmp_path / "benchmarks" / "results" / "demo.json").read_text())[0]["command"] == "python -m benchmarks.other"
    report.publish("demo", [{"a": 1}], "Demo", command="python -m benchmarks.demo --workdir runs/x")
    assert json.loads((tmp_path / "benchmarks" / "results" / "demo.json").read_text())[0]["command"] == "python -m benchmarks.demo --workdir runs/x"


def test_publish_names_the_reused_runs_in_the_notes_and_stamps_them_on_every_row(tmp_path, monkeypatch):
    from benchmarks import report

    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "machine", lambda: "test machine")
    reused = [{"path": "runs/x/seed0", "commit": "def", "code_version": "0123456789ab"}]
    report.publish("demo", [{"a": 1}, {"a": 2}], "Demo", notes="Pooled over seeds.", reused=reused)
    rows = json.loads((tmp_path / "benchmarks" / "results" / "demo.json").read_text())
    assert [row["reused_runs"] for row in rows] == [reused, reused]
    section = (tmp_path / "BENCHMARKS.md").read_text()
    assert "Pooled over seeds. Reused runs made by other code (--reuse): runs/x/seed0 (commit def, code_version 0123456789ab)." in section
    # Nothing reused: the rows say so (an empty list) and the notes are left as they are.
    report.publish("demo", [{"a": 1}], "Demo", notes="Pooled over seeds.", reused=[])
    assert json.loads((tmp_path / "benchmarks" / "results" / "demo.json").read_text())[0]["reused_runs"] == []
    assert "Reused runs" not in (tmp_path / "BENCHMARKS.md").read_text()
