"""Where a run's numbers come from: the commit and the code version that made them, a hash of its config, and
the check that aggregators pool only runs made by today's code (others only when told to reuse them).

The code version is a hash of the tracked code, not of the commit: commits that change only outputs (results,
the markdown files, docs) or the tests share it, and uncommitted code edits give another. Outside a git checkout (an
installed copy, a machine without git) every identity here is "unknown".
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess

from launch.errors import UsageError

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNKNOWN = "unknown"
NOT_RECORDED = "not recorded"

# What benchmarks write (results, their sections of the markdown files, figures): changes there are the
# outputs of the run being recorded, not changes to the code that made them.
OUTPUTS = ("benchmarks/results", "*.md", "docs")
# Files that make no result: the tests (and their golden files) and CI's script. A test mended while a long
# comparison runs leaves its runs today's.
NOT_RESULTS_CODE = ("tests", ".ci")
CODE = (".", *(f":(exclude){path}" for path in (*OUTPUTS, *NOT_RESULTS_CODE)))


def git(root: pathlib.Path, *args: str, stdin: str = "") -> str | None:
    """git's output in the checkout at `root`; None when root is not the top of one (a copy of these files
    inside another repository, a .venv in this one, must not take that repository's identity) or git fails."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
        if top.returncode != 0 or pathlib.Path(top.stdout.strip()).resolve() != pathlib.Path(root).resolve():
            return None
        completed = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, text=True)
    except OSError:  # no git installed, or root missing
        return None
    return completed.stdout if completed.returncode == 0 else None


def commit(root: pathlib.Path = ROOT) -> str:
    """The commit the working tree is at, with "+changes" when its code differs from it (results made from it)."""
    head = git(root, "rev-parse", "--short=12", "HEAD")
    if head is None:
        return UNKNOWN
    changed = git(root, "status", "--porcelain", "--untracked-files=no", "--", *CODE)
    return head.strip() + ("+changes" if changed and changed.strip() else "")


def code_version(root: pathlib.Path = ROOT) -> str:
    """12 hex digits of sha256 over every tracked code file (outputs left out) as it is on disk, each by path and
    git blob hash: the same for two commits whose code is the same, another once the code is edited, staged
    or not. Untracked files are not code until added, as for `commit`."""
    listed = git(root, "ls-files", "-z", "--", *CODE)
    if listed is None:
        return UNKNOWN
    # A tracked file deleted from the working tree is not there to hash: its absence from the list changes the version.
    paths = [path for path in listed.split("\0") if path and (pathlib.Path(root) / path).is_file()]
    blobs = git(root, "hash-object", "--stdin-paths", stdin="".join(path + "\n" for path in paths))
    if blobs is None:
        return UNKNOWN
    listing = "".join(f"{path}\t{blob}\n" for path, blob in zip(paths, blobs.split()))
    return hashlib.sha256(listing.encode()).hexdigest()[:12]


def config_sha256(config) -> str:
    """16 hex digits of sha256 over the config's canonical JSON (keys sorted), so key order does not matter."""
    canonical = json.dumps(json.loads(config.to_json()), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# root -> this process's first reading of its commit and code version (this_process).
_STARTED_WITH: dict[pathlib.Path, dict[str, str]] = {}


def this_process(root: pathlib.Path = ROOT) -> dict[str, str]:
    """{"commit", "code_version"} of the checkout at `root` as this process first read them. A run records
    these, not the files on disk when it ends: work goes on beside a run of hours, and code edited or committed
    meanwhile is not the code the running process loaded. launch.main and benchmarks.report read them at start."""
    if root not in _STARTED_WITH:
        _STARTED_WITH[root] = {"commit": commit(root), "code_version": code_version(root)}
    return _STARTED_WITH[root]


def made_by(config, root: pathlib.Path = ROOT) -> dict:
    """What run.json and results.json record of the code and config that made them."""
    return {**this_process(root), "config_sha256": config_sha256(config)}


def check_runs(run_dirs, reuse: bool, root: pathlib.Path = ROOT) -> list[dict]:
    """Refuses finished runs (folders holding a results.json) made by other code than today's, listing them all,
    unless `reuse`; then returns them ({path, commit, code_version}) for the caller to print and record.

    A run that records no code version was made before versions were recorded, by code nobody can name; an
    "unknown" version (no git checkout) matches nothing, since nothing says the code was the same."""
    today = code_version(root)
    foreign = []
    for run_dir in run_dirs:
        record = json.loads((pathlib.Path(run_dir) / "results.json").read_text())
        if today == UNKNOWN or record.get("code_version") != today:
            foreign.append({"path": str(run_dir), "commit": record.get("commit", NOT_RECORDED), "code_version": record.get("code_version", NOT_RECORDED)})
    if foreign and not reuse:
        listed = "\n".join(f"  {run['path']}: commit {run['commit']}, code_version {run['code_version']}" for run in foreign)
        raise UsageError(
            f"{len(foreign)} finished run(s) were made by other code than today's (code_version {today}):\n{listed}\n"
            "Rerun them from an empty workdir (move or delete these folders), or pass --reuse to aggregate them anyway (they are then listed with the results)."
        )
    return foreign


def describe_reused(runs: list[dict]) -> str:
    """One line naming the runs reused from other code, for printed output and notes."""
    listed = "; ".join(f"{run['path']} (commit {run['commit']}, code_version {run['code_version']})" for run in runs)
    return f"Reused runs made by other code (--reuse): {listed}."


def add_reuse_argument(parser, help: str = "aggregate finished runs made by other code than today's (they are listed in the notes and rows)") -> None:
    """The `--reuse` flag of every command that reads finished runs (check_runs refuses other code's without it)."""
    parser.add_argument("--reuse", action="store_true", help=help)


def check_finished_runs(run_dirs, reuse: bool, root: pathlib.Path = ROOT) -> list[dict]:
    """`check_runs` for an aggregator's command line, over those of `run_dirs` that hold a results.json (the
    others are yet to run, by today's code): a refusal exits with its message, and the runs reused are printed
    before any work, so a long command that pools them says so from its start."""
    finished = [path for path in map(pathlib.Path, run_dirs) if (path / "results.json").exists()]
    try:
        reused = check_runs(finished, reuse, root)
    except UsageError as error:
        raise SystemExit(f"error: {error}") from None
    if reused:
        print(describe_reused(reused), flush=True)
    return reused
