"""What the operator finds out once, before it starts: the facts an empty option stands for (its own
namespace, the cluster id, the default owner), so its configuration never changes while it runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from huggingface_hub import HfApi

from sandbox_operator.config.settings import OperatorConfig, RunSettings
from sandbox_operator.core.model import FailureKind
from sandbox_operator.hub.errors import classify
from sandbox_operator.k8s.client import resolve_cluster_id
from sandbox_operator.k8s.lease import LeaseSettings, default_identity, installed_namespace

log = logging.getLogger(__name__)


def token_user(config: OperatorConfig, sleep: Callable[[float], None] = time.sleep) -> str:
    """The Hub user of the operator's token (whoami), asked until the Hub answers: a Hub that is down
    or a token not yet valid delays the start, with a warning per attempt, and crashes nothing."""
    api = HfApi(endpoint=config.hub_endpoint, token=config.hub_token or None)
    delay = config.backoff_base
    while True:
        try:
            return str(api.whoami()["name"])
        except Exception as error:
            failure = classify("whoami", error).failure
        wait = max(delay, failure.retry_after or 0.0)
        if failure.kind is FailureKind.UNAUTHORIZED:
            wait = max(wait, config.credentials_backoff_min)
        log.warning(
            "cannot find the default owner (the token's user), retrying in %.0fs: %s", wait, failure.message
        )
        sleep(wait)
        delay = min(delay * 2, config.backoff_max)


def resolve_config(config: OperatorConfig) -> OperatorConfig:
    """The configuration with every empty option that stands for a fact of the environment filled in.
    Runs before the operator's event loop."""
    resolved = config.model_copy(
        update={
            "operator_namespace": config.operator_namespace or installed_namespace(),
            "cluster_id": asyncio.run(resolve_cluster_id(config.cluster_id)),
            "default_owner": config.default_owner or token_user(config),
        }
    )
    log.info("cluster id (in every Space's ownership marker): %s", resolved.cluster_id)
    if not config.default_owner:
        log.info("default owner is the token's user: %s", resolved.default_owner)
    return resolved


def own_identity(settings: RunSettings) -> str:
    """Who this process is, in the leader Lease and to kopf: the pod's name (the chart passes it from the
    downward API), else hostname-pid. Never the passwd database, where kopf's own default looks
    (getpass): the image's numeric user has no entry there."""
    return settings.identity or default_identity()


def lease_settings(settings: RunSettings, config: OperatorConfig) -> LeaseSettings | None:
    """The leader Lease this process contends for; None when leader election is off (no lease name)."""
    if not settings.lease_name:
        return None
    return LeaseSettings.with_duration(
        settings.lease_duration,
        name=settings.lease_name,
        namespace=settings.lease_namespace or config.operator_namespace or installed_namespace(),
        identity=own_identity(settings),
        serves=tuple(settings.namespaces),
    )
