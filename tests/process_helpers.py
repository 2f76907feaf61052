"""Running several processes of one multi-host job on this machine, on a loopback coordinator."""

import contextlib
import fcntl
import os
import socket
import subprocess
import tempfile

# One multi-process run at a time on this machine, whichever pytest-xdist worker starts it: two of them at
# once (four JAX processes beside the other worker's tests on a 2-core VM) left a process more than the CPU
# backend's 2 minutes short of joining its peer's topology exchange (fresh-ci at 79ddded).
LOCK = os.path.join(tempfile.gettempdir(), "metadiff_jax_tests_multiprocess.lock")
# The CPU backend's wait for every process's topology (jax_cpu_get_{local,global}_topology_timeout_minutes,
# 2 and 5 by default): room for a process started late on a loaded machine.
TOPOLOGY_TIMEOUTS = {"JAX_CPU_GET_LOCAL_TOPOLOGY_TIMEOUT_MINUTES": "8", "JAX_CPU_GET_GLOBAL_TOPOLOGY_TIMEOUT_MINUTES": "10"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def exclusive():
    """Holds the machine-wide lock for multi-process runs (released when the holder exits, however)."""
    with open(LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_processes(commands: list[list[str]], timeout: float, env: dict | None = None, **popen_kwargs) -> list[tuple[int, str, str]]:
    """Starts every command at once and returns (returncode, stdout, stderr) of each; none is left running.

    Runs once no other multi-process run of the suite is running; `timeout` counts from the start. Output goes
    to files, not pipes: a process blocked on a full pipe that nobody reads yet would stall the others at
    their next collective.
    """
    env = {**TOPOLOGY_TIMEOUTS, **(os.environ if env is None else env)}
    with exclusive(), tempfile.TemporaryDirectory() as folder:
        outputs = [(open(f"{folder}/{i}.out", "w+"), open(f"{folder}/{i}.err", "w+")) for i in range(len(commands))]
        processes = [subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env, **popen_kwargs) for command, (out, err) in zip(commands, outputs)]
        timed_out = False
        try:
            for p in processes:
                p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            for p in processes:  # never leave a process behind, whatever happened
                if p.poll() is None:
                    p.kill()
                    p.wait()
        results = []
        for p, (out, err) in zip(processes, outputs):
            out.seek(0)
            err.seek(0)
            results.append((p.returncode, out.read(), err.read()))
            out.close()
            err.close()
        if timed_out:  # where each process stood when it was killed: a hang's only witness
            tails = "\n".join(f"--- process {i}: stdout ---\n{o[-2000:]}\n--- process {i}: stderr ---\n{e[-3000:]}" for i, (_, o, e) in enumerate(results))
            raise AssertionError(f"processes still running after {timeout} s were killed; their last output:\n{tails}")
        return results
