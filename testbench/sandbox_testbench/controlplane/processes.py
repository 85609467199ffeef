"""Child processes of the local control plane: launch, readiness, pid files and termination.

Each component runs in its own session (so a terminal's Ctrl-C reaches the Python process, which
then stops them in order, and so a whole process group can be signalled). Its pid goes to
`state_dir/pids/<name>.pid`, which lets another process (the dev-mode CLI, or the next test run)
stop what this one started.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import ControlPlaneError, PortInUseError

# Start order; they are stopped in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
_PR_SET_PDEATHSIG = 1
_TAIL_LINES = 40


#: Where free ports are looked for: below the kernel's ephemeral range (Linux: 32768-60999), so that a
#: port found free is not handed to an outgoing connection before its server binds it.
_PORTS_FROM, _PORTS_TO = 20000, 32767


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now, outside the ephemeral range; held together so that they are distinct.

    They are released before the components bind them, hence the retry on PortInUseError. A port the
    kernel picked (bind to port 0) would come from the ephemeral range, where the many connections of
    tests run side by side take ports as sources: the component's bind then finds it in use.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("127.0.0.1", random.randint(_PORTS_FROM, _PORTS_TO)))
            except OSError:
                continue  # taken: try another
            ports.append(sock.getsockname()[1])
        return ports


def run_script(script: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run a hack/ script that prints its result as the last word of its stdout, passing its progress
    (stderr) through, since a cold build takes minutes; on failure, raise with its last lines."""
    proc = subprocess.Popen(
        ["bash", str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=20)
    for line in proc.stderr:  # stdout is only the final line, so it cannot fill its pipe meanwhile
        sys.stderr.write(line)
        tail.append(line)
    output = proc.stdout.read().split()
    if proc.wait() != 0 or not output:
        raise ControlPlaneError(f"{script} failed with exit code {proc.returncode}:\n{''.join(tail)}")
    return output[-1]


def log_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.log"


def pid_path(state_dir: Path, name: str) -> Path:
    return state_dir / "pids" / f"{name}.pid"


def log_tail(state_dir: Path, name: str) -> str:
    try:
        lines = log_path(state_dir, name).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(lines[-_TAIL_LINES:])


def die_with_parent_preexec(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn that sends the child `sig` when its parent dies, even by SIGKILL (Linux only).

    Used for test sessions: a killed pytest must not leave an apiserver behind.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, called after it
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def launch(
    name: str,
    argv: Sequence[str],
    state_dir: Path,
    *,
    die_with_parent: bool,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start one component with its output in `<name>.log` (command line first) and its pid recorded.

    `env` replaces the inherited environment, so callers start differently configured children.
    """
    log = log_path(state_dir, name)
    with log.open("wb") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent_preexec() if die_with_parent else None,
            env=env,
        )
    pid_file = pid_path(state_dir, name)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def _failure(state_dir: Path, name: str, message: str) -> ControlPlaneError:
    tail = log_tail(state_dir, name)
    details = f"last lines of {log_path(state_dir, name)}:\n{tail}"
    for line in tail.splitlines():
        if "address already in use" in line:
            return PortInUseError(f"{message}: {line.strip()}; {details}")
    return ControlPlaneError(f"{message}; {details}")


def wait_until(
    name: str, proc: subprocess.Popen[bytes], state_dir: Path, ready: Callable[[], bool], timeout: float
) -> None:
    """Poll `ready` until it holds; fail early, with the log tail, if the process exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise _failure(state_dir, name, f"{name} exited with code {code} before it was ready")
        if ready():
            return
        if time.monotonic() > deadline:
            raise _failure(state_dir, name, f"{name} was not ready within {timeout:.0f}s")
        time.sleep(0.1)


def _alive(pid: int, name: str) -> bool:
    """Whether `pid` is a live (not zombie) process running the `name` binary.

    Checking the binary guards against signalling an unrelated process that reused a stale pid.
    """
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return Path(os.fsdecode(argv0)).name == name and state != "Z"


def recorded_pid(state_dir: Path, name: str) -> int | None:
    """The pid recorded for `name` if that process still runs."""
    try:
        pid = int(pid_path(state_dir, name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid, name) else None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # each component leads its own session, so its group id is its pid


def _wait_gone(pid: int, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid, name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(state_dir: Path, name: str, timeout: float) -> None:
    """SIGTERM the recorded process group, SIGKILL it after `timeout`, and forget the pid."""
    pid = recorded_pid(state_dir, name)
    if pid is not None:
        _signal_group(pid, signal.SIGTERM)
        if not _wait_gone(pid, name, timeout):
            _signal_group(pid, signal.SIGKILL)
            if not _wait_gone(pid, name, 5.0):
                raise ControlPlaneError(f"{name} (pid {pid}) survived SIGKILL")
    pid_path(state_dir, name).unlink(missing_ok=True)


def stop_from_state_dir(state_dir: Path, timeout: float = 10.0) -> None:
    """Stop the components recorded in `state_dir/pids`, from any process, newest first."""
    for name in reversed(COMPONENTS):
        terminate(state_dir, name, timeout)
