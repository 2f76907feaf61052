"""The launch scripts issue the commands README documents; gcloud, srun and python are stood in for by fakes
that record their arguments, so nothing leaves this machine."""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
JAX_VERSION = next(line.split("==")[1] for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("jax=="))


# One line per call, the arguments' own line breaks (the ssh --command script) folded into spaces.
_LOG_CALL = 'echo "{name} $*" | tr "\\n" " " | sed "s/  */ /g; s/ $//" >> "{log}"; echo >> "{log}"'


def _fake(bin_dir: pathlib.Path, name: str, log: pathlib.Path, body: str = "") -> None:
    """An executable `name` first on PATH (a real gcloud may be installed: it must never be reached)."""
    script = bin_dir / name
    script.write_text(f'#!/usr/bin/env bash\n{_LOG_CALL.format(name=name, log=log)}\n{body}\nexit 0\n')
    script.chmod(0o755)


def _run(script: str, args: list[str], env: dict, bin_dir: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(ROOT / "launch" / script), *args], capture_output=True, text=True, timeout=60, env=env)


def test_tpu_pod_script_creates_the_vm_then_runs_the_job_on_every_worker(tmp_path):
    log = tmp_path / "calls.log"
    _fake(tmp_path, "gcloud", log, body='[[ "$*" == *describe* ]] && exit 1')  # no such TPU yet: the script must create it
    env = {"TPU_NAME": "pod", "ZONE": "us-central2-b", "WORKDIR": "/mnt/shared/run"}
    result = _run("tpu_pod.sh", ["configs/default.py", "--config.metadiff.batch_size=32"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[4] for c in calls] == ["describe", "create", "scp", "ssh"]
    assert "--accelerator-type v4-32" in calls[1]
    assert calls[2].endswith("--worker=all") and "--worker=all" in calls[3]
    assert f"'jax[tpu]=={JAX_VERSION}'" in calls[3]
    assert "python3 -m launch.main --config configs/default.py --workdir /mnt/shared/run --distributed --config.metadiff.batch_size=32" in calls[3]


def test_tpu_pod_script_reuses_a_vm_and_names_what_is_missing(tmp_path):
    log = tmp_path / "calls.log"
    _fake(tmp_path, "gcloud", log)
    result = _run("tpu_pod.sh", ["configs/default.py"], {"TPU_NAME": "pod", "ZONE": "z", "WORKDIR": "/w"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert [c.split()[4] for c in log.read_text().splitlines()] == ["describe", "scp", "ssh"]
    missing = _run("tpu_pod.sh", ["configs/default.py"], {"TPU_NAME": "pod", "ZONE": "z", "WORKDIR": ""}, tmp_path)
    assert missing.returncode != 0 and "set WORKDIR" in missing.stderr


def test_multi_gpu_script_installs_cuda_jax_and_runs_the_job(tmp_path):
    log = tmp_path / "calls.log"
    _fake(tmp_path, "python", log)
    result = _run("multi_gpu.sh", ["configs/default.py", "runs/gpu", "--config.seed=3"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    install, job = log.read_text().splitlines()
    assert install.startswith("python -m pip install") and f"jax[cuda12]=={JAX_VERSION}" in install
    assert job == "python -m launch.main --config configs/default.py --workdir runs/gpu --config.seed=3"


def test_slurm_script_starts_one_distributed_process_per_task(tmp_path):
    log = tmp_path / "calls.log"
    _fake(tmp_path, "srun", log)
    result = _run("slurm.sbatch", ["configs/default.py", "/shared/run"], {"SLURM_SUBMIT_DIR": str(ROOT)}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert log.read_text().strip() == "srun --kill-on-bad-exit=1 python -u -m launch.main --config configs/default.py --workdir /shared/run --distributed"
    header = (ROOT / "launch" / "slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=8" in header and "#SBATCH --gpus-per-node=8" in header
