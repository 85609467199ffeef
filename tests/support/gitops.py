"""How GitOps tools read the operator's objects, with their real code: kstatus and Flux's CEL health
checks through the Go command hack/tools/kstatus builds (it needs the binaries: a missing one fails,
never skips), Argo CD's health through the shipped health.lua under a real Lua 5.1 (Argo CD's
gopher-lua speaks 5.1).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51

from sandbox_testbench.controlplane import find_binaries

from .stages import REPO

ARGOCD_HEALTH = REPO / "deploy" / "argocd" / "health.lua"
FLUX_KUSTOMIZATION = REPO / "deploy" / "flux" / "kustomization.yaml"


@dataclass(frozen=True)
class Reading:
    """What each tool makes of one object: kstatus' status, Argo CD's health, Flux's CEL verdict."""

    kstatus: str
    argo: str
    flux: str


@dataclass(frozen=True)
class Told:
    """A reading and the messages that came with it."""

    reading: Reading
    kstatus_message: str
    argo_message: str


def kstatus_binary() -> Path:
    binary = find_binaries() / "kstatus"
    assert binary.is_file(), f"{binary} is missing: hack/build-binaries.sh builds it"
    return binary


def read(objects: Sequence[Mapping[str, Any]]) -> list[Told]:
    """Every object through kstatus, Flux's CEL health checks (deploy/flux) and Argo CD's health.lua."""
    done = subprocess.run(
        [str(kstatus_binary()), "-flux", str(FLUX_KUSTOMIZATION)],
        input=json.dumps(list(objects)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    computed = json.loads(done.stdout)
    told = []
    for obj, result in zip(objects, computed, strict=True):
        argo, message = argo_health(obj)
        told.append(Told(Reading(result["kstatus"], argo, result["flux"]), result["message"], message))
    return told


def argo_health(obj: Mapping[str, Any]) -> tuple[str, str]:
    """The shipped health.lua on one object, as Argo CD runs it: `obj` global, a table returned."""
    runtime = lua51.LuaRuntime()
    runtime.globals().obj = runtime.table_from(json.loads(json.dumps(obj)), recursive=True)
    health = runtime.execute(ARGOCD_HEALTH.read_text())
    return str(health["status"]), str(health["message"] or "")
