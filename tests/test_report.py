"""The commit a benchmark's result records (launch.provenance.commit, which benchmarks.report records)."""

import subprocess

from launch import provenance


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_commit_is_marked_changed_by_code_edits_but_not_by_the_outputs_a_benchmark_writes(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for path in ("code.py", "BENCHMARKS.md", "benchmarks/results/a.json"):
        (tmp_path / path).write_text("0\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = provenance.commit(tmp_path)
    assert len(head) == 12 and not head.endswith("+changes")
    (tmp_path / "BENCHMARKS.md").write_text("1\n")
    (tmp_path / "benchmarks" / "results" / "a.json").write_text("1\n")
    assert provenance.commit(tmp_path) == head
    (tmp_path / "code.py").write_text("1\n")
    assert provenance.commit(tmp_path) == head + "+changes"
