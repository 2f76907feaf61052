"""Running several processes of one multi-host job on this machine, on a loopback coordinator."""

import socket
import subprocess


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_processes(commands: list[list[str]], timeout: float, **popen_kwargs) -> list[tuple[int, str, str]]:
    """Starts every command at once and returns (returncode, stdout, stderr) of each; none is left running."""
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs) for command in commands]
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    finally:
        for p in processes:  # never leave a process behind, whatever happened
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]
