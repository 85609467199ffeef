"""The README's "Security model" RBAC lines, run as written against the local control plane: each
`kubectl auth can-i` answers as its comment says and each `# refused` line is rejected, so the
documented roles and the admission policy grant what the model promises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox_testbench.controlplane import ControlPlane, Kubectl

from harness import readme_block, run_shell

FIRST_LINE = "kubectl create namespace team-b"


@pytest.fixture
def clean_team_b(kubectl: Kubectl) -> Iterator[None]:
    yield
    kubectl("delete", "namespace", "team-b", "--wait=false", "--ignore-not-found")


def test_security_model_rbac_lines_hold_as_written(
    control_plane: ControlPlane, approval_policy: None, clean_team_b: None
) -> None:
    lines = readme_block(FIRST_LINE)
    assert lines[0] == FIRST_LINE and len(lines) > 10
    answered = 0
    for line in lines:
        command, _, expected = line.partition("  # ")
        result = run_shell(control_plane, command, check=False)
        if expected == "refused":
            answered += 1
            assert result.returncode != 0 and "Forbidden" in result.stderr, f"{command}: admitted"
        elif expected in ("yes", "no"):
            answered += 1
            assert result.stdout.strip() == expected, f"{command}: {result.stdout}{result.stderr}"
        else:
            assert result.returncode == 0, f"{command}: {result.stderr}"
            if expected:
                assert result.stdout.strip() == expected, f"{command}: {result.stdout}"
    assert answered >= 6  # the block still holds its checks
