"""Running several processes of one multi-host job on this machine, on a loopback coordinator."""

import socket
import subprocess
import tempfile


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_processes(commands: list[list[str]], timeout: float, **popen_kwargs) -> list[tuple[int, str, str]]:
    """Starts every command at once and returns (returncode, stdout, stderr) of each; none is left running.

    Output goes to files, not pipes: a process blocked on a full pipe that nobody reads yet would stall the
    others at their next collective.
    """
    with tempfile.TemporaryDirectory() as folder:
        outputs = [(open(f"{folder}/{i}.out", "w+"), open(f"{folder}/{i}.err", "w+")) for i in range(len(commands))]
        processes = [subprocess.Popen(command, stdout=out, stderr=err, text=True, **popen_kwargs) for command, (out, err) in zip(commands, outputs)]
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
