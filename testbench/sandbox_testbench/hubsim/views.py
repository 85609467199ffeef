"""Hub response bodies built from the model, in the exact shapes huggingface_hub 2.4 parses."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any, Final

from .constants import HARDWARE_CATALOG, SERVING_STAGES
from .state import CallRecord, Entry, HubState, Sample, Space

#: `ExpandSpaceProperty_T` of the client: what `expand=` may ask for (fidelity: F13).
EXPANDABLE: Final = frozenset(
    {
        "author",
        "cardData",
        "createdAt",
        "datasets",
        "disabled",
        "lastModified",
        "likes",
        "models",
        "private",
        "region",
        "resourceGroup",
        "runtime",
        "sdk",
        "sha",
        "siblings",
        "subdomain",
        "tags",
        "trendingScore",
        "usedStorage",
    }
)
#: What the Hub's list endpoint returns per Space without `full` or `expand` (fidelity: F14).
LIST_KEYS: Final = ("_id", "id", "likes", "trendingScore", "private", "sdk", "tags", "createdAt")


def iso(wall: float) -> str:
    """`2025-03-07T12:24:18.657Z`: the client's parse_datetime accepts only the `Z` form (fidelity: F7)."""
    moment = datetime.fromtimestamp(wall, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def space_url(base_url: str, space_id: str) -> str:
    return f"{base_url}/spaces/{space_id}"


def sandbox_url_template(base_url: str) -> str:
    """Where the emulator serves each Space's app, by its subdomain: it stands for
    https://{subdomain}.hf.space (fidelity: F36); the operator's `sandbox_url_template` for it."""
    return f"{base_url}/_sandbox/{{subdomain}}"


def sandbox_url(base_url: str, space_id: str) -> str:
    """The `host` of a Space: its app's address (fidelity: F36)."""
    return sandbox_url_template(base_url).replace("{subdomain}", subdomain(space_id))


def subdomain(space_id: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", space_id.lower()).strip("-")


def _stable_id(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:24]


def runtime_json(space: Space) -> dict[str, Any]:
    """SpaceRuntime body with the recorded keys; `hardware` is an object, never null (fidelity: F16)."""
    body: dict[str, Any] = {
        "stage": space.stage,
        "hardware": {"current": space.current, "requested": space.requested},
        "storage": None,
    }
    replicas: dict[str, int] = {"requested": 1}
    if space.stage in SERVING_STAGES:
        replicas["current"] = 1
    if space.sdk == "static":  # the static Space's recorded runtime has only these keys
        return {**body, "replicas": replicas}
    return {
        **body,
        "gcTimeout": space.gc_timeout,
        "replicas": replicas,
        "devMode": False,
        "domains": [{"domain": f"{subdomain(space.id)}.hf.space", "stage": "READY"}],
    }


def space_json(state: HubState, space: Space, base_url: str) -> dict[str, Any]:
    """Everything `space_info` returns for a Space; list and `expand` answers are subsets (fidelity: F13)."""
    card: dict[str, Any] = {"title": space.name, "sdk": space.sdk}
    if space.sdk == "docker":
        card["app_port"] = 7860
    if space.duplicated_from:
        card["duplicated_from"] = space.duplicated_from
    return {
        "_id": space.oid,
        "id": space.id,
        "author": space.namespace,
        "sha": space.sha,
        "lastModified": iso(state.wall_of(space.created)),
        "private": space.private,
        "gated": False,
        "disabled": False,
        "host": sandbox_url(base_url, space.id),
        "subdomain": subdomain(space.id),
        "likes": 0,
        "sdk": space.sdk,
        "tags": [space.sdk, "region:us"],
        "createdAt": iso(state.wall_of(space.created)),
        "cardData": card,
        "siblings": [{"rfilename": name} for name in space.files],
        "runtime": runtime_json(space),
        "models": [],
        "datasets": [],
        "trendingScore": 0,
        "usedStorage": 0,
        "region": "us",
    }


def select(full: dict[str, Any], expand: list[str], default_keys: tuple[str, ...] | None) -> dict[str, Any]:
    """The Hub answers `expand=` with the id plus exactly the expanded properties (fidelity: F13)."""
    if expand:
        keys: tuple[str, ...] = ("_id", "id", *expand)
    elif default_keys is not None:
        keys = default_keys
    else:
        return full
    return {key: full[key] for key in keys if key in full}


def _entry_json(entry: Entry, state: HubState, with_value: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"value": entry.value} if with_value else {}
    if entry.description is not None:
        body["description"] = entry.description
    body["updatedAt"] = iso(state.wall_of(entry.updated_at))
    return body


def secrets_json(state: HubState, space: Space) -> dict[str, Any]:
    """Write-only: keys, descriptions and dates, never values (fidelity: F24)."""
    return {key: _entry_json(entry, state, False) for key, entry in space.secrets.items()}


def variables_json(state: HubState, space: Space) -> dict[str, Any]:
    """The full map, which GET, POST and DELETE all answer with (fidelity: F25)."""
    return {key: _entry_json(entry, state, True) for key, entry in space.variables.items()}


def whoami_json(user: str, orgs: list[str]) -> dict[str, Any]:
    return {
        "type": "user",
        "id": _stable_id(user),
        "name": user,
        "fullname": user,
        "email": f"{user}@hubsim.invalid",
        "emailVerified": True,
        "isPro": False,
        "orgs": [
            {"type": "org", "name": org, "fullname": org, "id": _stable_id(org), "roleInOrg": "write"}
            for org in orgs
        ],
        "auth": {"type": "access_token", "accessToken": {"displayName": "hubsim", "role": "write"}},
    }


def admin_space_json(state: HubState, space: Space) -> dict[str, Any]:
    """The emulator's view of a Space, secrets included, for assertions the Hub API cannot make."""
    return {
        "id": space.id,
        "stage": space.stage,
        "hardware": {"current": space.current, "requested": space.requested},
        "private": space.private,
        "visibility": space.visibility,
        "sdk": space.sdk,
        "createdAt": iso(state.wall_of(space.created)),
        "sleepTime": space.sleep_time,
        "gcTimeout": space.gc_timeout,
        "idleSince": iso(state.wall_of(space.idle_since)),
        "duplicatedFrom": space.duplicated_from,
        "variables": {key: entry.value for key, entry in space.variables.items()},
        "secrets": {key: entry.value for key, entry in space.secrets.items()},
        "hardwareHistory": [_sample_json(state, sample) for sample in space.hardware_history()],
        "timeline": [_sample_json(state, sample) for sample in space.timeline],
        "billing": _billing_json(space.billed_seconds(state.now())),
    }


def _sample_json(state: HubState, sample: Sample) -> dict[str, Any]:
    return {
        "monotonic": sample.monotonic,
        "time": iso(state.wall_of(sample.monotonic)),
        "stage": sample.stage,
        "current": sample.current,
        "requested": sample.requested,
    }


def _billing_json(seconds: dict[str, float]) -> dict[str, Any]:
    """What the Hub would bill so far: seconds per flavor, cost at catalog prices (fidelity: F29)."""
    usd = sum(HARDWARE_CATALOG[flavor] * spent / 3600 for flavor, spent in seconds.items())
    return {"seconds": seconds, "usd": usd}


def call_json(state: HubState, call: CallRecord) -> dict[str, Any]:
    return {
        "monotonic": call.monotonic,
        "time": iso(state.wall_of(call.monotonic)),
        "method": call.method,
        "path": call.path,
        "query": call.query,
        "route": call.route,
        "status": call.status,
        "user": call.user,
        "flavor": call.flavor,
        "faulted": call.faulted,
        "requestId": call.request_id,
    }
