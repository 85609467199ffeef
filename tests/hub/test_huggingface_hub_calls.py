"""Offline proof that the emulator speaks to the unmodified huggingface_hub client the operator uses.

Every HfApi method the operator calls (and those the brief lists for sleep time and pausing) is
driven here with the argument shapes of operator/sandbox_operator/hub/client.py, with no client patching:
each answer must parse into the client's own types. A guard fails when hub/client.py starts calling a
method this test does not drive.
"""

from __future__ import annotations

import ast
import inspect
import warnings

from huggingface_hub import HfApi, SpaceHardware, SpaceInfo, SpaceRuntime, SpaceVariable
from huggingface_hub.errors import RepositoryNotFoundError

from sandbox_operator.api import SANDBOX_TOKEN_SECRET
from sandbox_operator.core.model import MARKER_CLUSTER_ID, MARKER_SESSION_UID
from sandbox_operator.hub import client as operator_hub
from sandbox_testbench.hubsim import HubSimAdmin

DRIVEN = frozenset(
    {
        "duplicate_repo",
        "space_info",
        "get_space_runtime",
        "get_space_variables",
        "add_space_secret",
        "request_space_hardware",
        "restart_space",
        "pause_space",
        "delete_repo",
        "list_spaces",
        "whoami",
        "list_spaces_hardware",
        "set_space_sleep_time",
        "delete_space_variable",
        "add_space_variable",
    }
)


def _methods_the_operator_calls() -> set[str]:
    """Every `self._api.<name>(...)` in hub/client.py."""
    tree = ast.parse(inspect.getsource(operator_hub))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "_api"
    }


def test_every_client_method_the_operator_calls_is_driven_here() -> None:
    called = _methods_the_operator_calls()
    assert called, "hub/client.py no longer calls self._api: update this guard"
    assert called <= DRIVEN, f"drive these too: {sorted(called - DRIVEN)}"
    assert all(callable(getattr(HfApi, name)) for name in DRIVEN)


def test_the_operator_calls_against_the_emulator(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    space_id = "alice/ags-0b0e5a4e"
    assert alice.whoami(cache=True)["name"] == "alice"
    catalog = alice.list_spaces_hardware()
    assert {"cpu-basic", "t4-small"} <= {row.name for row in catalog}

    alice.duplicate_repo(
        from_id=template,
        to_id=space_id,
        repo_type="space",
        private=True,
        space_hardware=SpaceHardware.CPU_BASIC,
        space_secrets=[{"key": SANDBOX_TOKEN_SECRET, "value": "sbx"}],
        space_variables=[
            {"key": MARKER_SESSION_UID, "value": "u1"},
            {"key": MARKER_CLUSTER_ID, "value": "default"},
        ],
    )
    info = alice.space_info(space_id)
    assert isinstance(info, SpaceInfo) and isinstance(info.runtime, SpaceRuntime)
    assert (info.id, info.private, info.runtime.stage) == (space_id, True, "RUNNING")
    assert info.created_at is not None and info.host
    runtime = alice.get_space_runtime(space_id)
    assert (runtime.stage, runtime.hardware, runtime.requested_hardware) == (
        "RUNNING",
        "cpu-basic",
        "cpu-basic",
    )

    variables = alice.get_space_variables(space_id)
    assert all(isinstance(v, SpaceVariable) for v in variables.values())
    assert variables[MARKER_SESSION_UID].value == "u1"
    moved = alice.add_space_variable(space_id, MARKER_SESSION_UID, "u2")  # a warm pool's claim
    assert moved[MARKER_SESSION_UID].value == "u2"
    alice.add_space_secret(space_id, SANDBOX_TOKEN_SECRET, "rotated")
    assert admin.space(space_id)["secrets"][SANDBOX_TOKEN_SECRET] == "rotated"

    switched = alice.request_space_hardware(space_id, SpaceHardware.T4_SMALL, sleep_time=1800)
    assert (switched.requested_hardware, switched.sleep_time) == ("t4-small", 1800)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cpu-basic warning on paid hardware
        assert alice.set_space_sleep_time(space_id, 900).sleep_time == 900
    assert alice.pause_space(space_id).stage == "PAUSED"
    assert alice.restart_space(space_id).stage == "BUILDING"
    assert alice.get_space_runtime(space_id).hardware == "t4-small"

    listed = list(alice.list_spaces(author="alice", search="ags-"))
    assert [space.id for space in listed] == [space_id] and listed[0].created_at is not None

    remaining = alice.delete_space_variable(space_id, MARKER_CLUSTER_ID)
    assert set(remaining) == {MARKER_SESSION_UID}
    alice.delete_repo(space_id, repo_type="space", missing_ok=True)
    alice.delete_repo(space_id, repo_type="space", missing_ok=True)  # already gone: swallowed
    try:
        alice.space_info(space_id)
    except RepositoryNotFoundError:
        pass
    else:
        raise AssertionError("a deleted Space must be RepositoryNotFound")
