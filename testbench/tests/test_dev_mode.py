"""Dev mode's supervisor says which process it started has died, instead of looking ready without it."""

from __future__ import annotations

import sys
from pathlib import Path

from sandbox_testbench.controlplane import ControlPlane
from sandbox_testbench.controlplane.processes import launch
from sandbox_testbench.dev import DevEnvironment


def test_a_dead_operator_is_named_with_its_exit_code_and_the_end_of_its_log(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path / "controlplane", bin_dir=tmp_path)
    running = [sys.executable, "-c", "import time; time.sleep(60)"]
    operator = launch("operator", running, tmp_path, die_with_parent=True)
    env = DevEnvironment(tmp_path, tmp_path / "env.sh", plane, operator)
    try:
        assert env.death() is None
    finally:
        operator.kill()
        operator.wait()
    crashed = [sys.executable, "-c", "print('lost the Lease'); raise SystemExit(3)"]
    operator = launch("operator", crashed, tmp_path, die_with_parent=True)
    operator.wait(timeout=30)
    death = DevEnvironment(tmp_path, tmp_path / "env.sh", plane, operator).death()
    assert death is not None
    assert "operator exited (code 3)" in death and "lost the Lease" in death
    assert str(tmp_path / "operator.log") in death
    killed = launch("operator", running, tmp_path, die_with_parent=True)
    killed.kill()
    killed.wait()
    death = DevEnvironment(tmp_path, tmp_path / "env.sh", plane, killed).death()
    assert death is not None and "operator was killed by SIGKILL" in death
