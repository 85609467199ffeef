"""Every stage of a session and of a pool (tests/support/stages.py), read by the real kstatus, Flux's
CEL health checks (deploy/flux) and Argo CD's health.lua (deploy/argocd): what each tool says is
written once per kind, in the tables below."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from sandbox_operator import api
from tests.support.docs import fenced, table
from tests.support.gitops import FLUX_KUSTOMIZATION, REPO, Reading, read
from tests.support.stages import pool_objects, served, session_objects

CURRENT = "Current"
IN_PROGRESS = "InProgress"
FAILED = "Failed"
TERMINATING = "Terminating"

#: Session stage -> (kstatus, Argo CD, Flux CEL).
SESSION_READINGS = {
    "created, no status written yet": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "building": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "ready": Reading(CURRENT, "Healthy", CURRENT),
    "spec changed, not observed yet": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "paid flavor awaiting approval": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "approved, upgrading": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "approval expired": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "denied": Reading(FAILED, "Degraded", FAILED),
    "budget spent": Reading(FAILED, "Degraded", FAILED),
    "template not allowed": Reading(FAILED, "Degraded", FAILED),
    "Hub unavailable, retried": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "pausing": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "paused": Reading(CURRENT, "Suspended", CURRENT),
    "sleeping": Reading(CURRENT, "Healthy", CURRENT),
    "deleting": Reading(TERMINATING, "Progressing", IN_PROGRESS),
}

#: Pool stage -> (kstatus, Argo CD, Flux CEL).
POOL_READINGS = {
    "created, no status written yet": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "filling": Reading(IN_PROGRESS, "Progressing", IN_PROGRESS),
    "ready": Reading(CURRENT, "Healthy", CURRENT),
    "template not allowed": Reading(FAILED, "Degraded", FAILED),
    "deleting": Reading(TERMINATING, "Progressing", IN_PROGRESS),
}


@pytest.mark.parametrize(
    ("objects", "readings"),
    [(session_objects, SESSION_READINGS), (pool_objects, POOL_READINGS)],
    ids=[api.KIND, api.POOL_KIND],
)
def test_every_stage_reads_in_kstatus_flux_and_argo_cd_as_its_table_says(
    objects: Callable[[], dict[str, dict[str, Any]]], readings: dict[str, Reading]
) -> None:
    stages = objects()
    assert stages.keys() == readings.keys()
    told = read(list(stages.values()))
    assert dict(zip(stages, (t.reading for t in told), strict=True)) == readings
    assert all(t.argo_message for t in told)


def test_a_stalled_session_says_why_in_every_tool() -> None:
    (denied,) = read([session_objects()["denied"]])
    assert "denied by alice" in denied.kstatus_message and "denied by alice" in denied.argo_message


def test_a_fresh_object_would_read_current_without_the_crd_default() -> None:
    """Why the CRD defaults status: kstatus calls a custom resource without status Current (and
    Flux's expressions cannot evaluate on it)."""
    bare = served(api.KIND, {})
    del bare["status"]
    (told,) = read([bare])
    assert told.reading == Reading(CURRENT, "Progressing", "Unknown")


def test_the_docs_show_the_shipped_flux_expressions_and_argo_cd_keys_of_both_kinds() -> None:
    docs = REPO / "docs" / "status.md"
    shown = yaml.safe_load(fenced(docs, "yaml", "healthCheckExprs"))
    assert (
        shown["healthCheckExprs"]
        == yaml.safe_load(FLUX_KUSTOMIZATION.read_text())["spec"]["healthCheckExprs"]
    )
    keys = {f"resource.customizations.health.{api.GROUP}_{kind}" for kind in (api.KIND, api.POOL_KIND)}
    assert yaml.safe_load(fenced(docs, "yaml", "argocd-cm"))["data"].keys() == keys
    assert all(key in fenced(docs, "sh", "argocd-cm") for key in keys)


def test_the_status_page_table_says_what_the_tools_say() -> None:
    shown = {cells[0]: Reading(*cells[2:5]) for cells in table(REPO / "docs" / "status.md", "| stage |")}
    assert shown == SESSION_READINGS
