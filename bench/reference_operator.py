"""A deliberately simple operator the benchmark compares sandbox-operator with.

It waits for a sandbox the way the system we replace did: one kopf create handler per session
duplicates the template Space, then polls `get_space_runtime` (at once, then every 5 s) until RUNNING
(a Hub error, such as the 404 of a fresh private duplicate or a 429, is waited out by the next poll),
and marks the session Ready in its status. A delete handler deletes the Space. No connection
Secret, no health check, no approvals, no rate gate: it does less than sandbox-operator, so the
ratios it anchors are, if anything, kind to it.

    python bench/reference_operator.py --liveness http://127.0.0.1:8081/healthz

Reads HF_ENDPOINT, HF_TOKEN, SANDBOX_OPERATOR_DEFAULT_OWNER, SANDBOX_OPERATOR_DEFAULT_TEMPLATE
and KUBECONFIG like sandbox-operator does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import kopf
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from sandbox_operator import api

POLL_SECONDS: Final = 5.0
#: Stages after which polling is pointless (the handler fails and kopf retries it).
FAILED_STAGES: Final = frozenset({"BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR", "NO_APP_FILE", "DELETING"})
#: Threads for the blocking Hub client: enough that 1,000 sessions polling every 5 s never queue.
HUB_THREADS: Final = 64

_hub = HfApi(endpoint=os.environ.get("HF_ENDPOINT"), token=os.environ.get("HF_TOKEN"))
_executor = ThreadPoolExecutor(HUB_THREADS, thread_name_prefix="hub")


def space_id(owner: str, uid: str) -> str:
    """One Space per session, named after its UID, so a retried handler finds its own duplicate."""
    return f"{owner}/ref-{uid}"


async def _hub_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_executor, lambda: fn(*args, **kwargs))


def _owner(spec: kopf.Spec) -> str:
    return str(spec.get("owner") or os.environ["SANDBOX_OPERATOR_DEFAULT_OWNER"])


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """No cluster-wide CRD scan: the chart's RBAC (which both operators run with) does not allow it."""
    settings.scanning.disabled = True


@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
async def create(spec: kopf.Spec, uid: str, patch: kopf.Patch, **_: Any) -> None:
    template = spec.get("template") or os.environ["SANDBOX_OPERATOR_DEFAULT_TEMPLATE"]
    target = space_id(_owner(spec), uid)
    try:
        await _hub_call(_hub.duplicate_repo, template, target, repo_type="space", private=True, exist_ok=True)
    except HfHubHTTPError as error:
        raise kopf.TemporaryError(f"duplicate failed: {error}", delay=POLL_SECONDS) from error
    while True:
        try:
            stage = (await _hub_call(_hub.get_space_runtime, target)).stage
        except HfHubHTTPError:
            stage = None  # not visible yet, or rate-limited: the next poll will tell
        if stage == "RUNNING":
            break
        if stage in FAILED_STAGES:
            raise kopf.TemporaryError(f"Space {target} is {stage}", delay=POLL_SECONDS)
        await asyncio.sleep(POLL_SECONDS)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch.status["phase"] = "Ready"
    patch.status["spaceId"] = target
    patch.status["conditions"] = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "SpaceRunning",
            "message": "",
            "lastTransitionTime": now,
        }
    ]


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL)
async def delete(spec: kopf.Spec, uid: str, **_: Any) -> None:
    try:
        await _hub_call(_hub.delete_repo, space_id(_owner(spec), uid), repo_type="space", missing_ok=True)
    except HfHubHTTPError as error:
        raise kopf.TemporaryError(f"delete failed: {error}", delay=POLL_SECONDS) from error


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--liveness", default=None, help="kopf liveness endpoint URL")
    args = parser.parse_args()
    kopf.configure(verbose=False)
    for name in ("httpx", "httpx2"):  # a line per Hub call would cost the reference CPU we do not pay
        logging.getLogger(name).setLevel(logging.WARNING)
    kopf.run(standalone=True, clusterwide=True, liveness_endpoint=args.liveness)


if __name__ == "__main__":
    main()
