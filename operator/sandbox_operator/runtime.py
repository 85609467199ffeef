"""The composition root: the Runtime every handler shares, built once from the configuration, and
`run_operator`, which sets up the process and the event loop and runs kopf with the handlers."""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
import uvloop

# The type of kopf.operator's `identity`, which kopf does not re-export (its own CLI builds it so).
from kopf._core.engines.peering import Identity as KopfIdentity

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig, RunSettings
from sandbox_operator.core import money
from sandbox_operator.hub.client import HubClient
from sandbox_operator.hub.creates_in_flight import CreateSlots
from sandbox_operator.hub.edge_probe import EdgeProber
from sandbox_operator.hub.listing import FleetObserver
from sandbox_operator.hub.prices import PriceCatalog
from sandbox_operator.k8s.client import KubeClient
from sandbox_operator.k8s.leadership import run_as_leader
from sandbox_operator.k8s.lease import LeaderElector
from sandbox_operator.k8s.secret_cache import SecretCache
from sandbox_operator.k8s.transport import KubeApi
from sandbox_operator.observability import metrics
from sandbox_operator.observability.health import HealthMonitor, WatchSync, readiness, serving_readiness
from sandbox_operator.pools.book import PoolBook
from sandbox_operator.startup import lease_settings, own_identity, resolve_config

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What every handler shares: configuration and the two API clients."""

    config: OperatorConfig
    hub: HubClient
    kube: KubeClient
    prices: PriceCatalog
    #: The latest listing of each owner's Spaces, read by every session's loop.
    observer: FleetObserver
    #: Building Spaces' apps, asked at the edge whether they answer yet (hub/edge_probe.py).
    prober: EdgeProber
    #: The read token Secrets, read once per short while for every session's pass.
    secrets: SecretCache
    #: Namespaces watched; empty: the whole cluster.
    namespaces: list[str] = field(default_factory=list)
    monitor: HealthMonitor = field(default_factory=HealthMonitor)
    #: Whether the watches of sessions and pools delivered their initial listing (readiness).
    sync: WatchSync = field(default_factory=lambda: WatchSync((api.PLURAL, api.POOL_PLURAL)))
    #: Background tasks started with the operator (sweeper, heartbeat, watch checks).
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Writers of warm pools' status in this process: one at a time per pool, claims batched.
    pools: PoolBook = field(default_factory=PoolBook)
    #: Turns for duplicates, so each can leave by its send deadline (hub/create_turns.py).
    create_slots: CreateSlots = field(default_factory=CreateSlots)

    def platform_read_token_secret(self, namespace: str) -> tuple[str, str] | None:
        """Where the platform keeps the Hub read token for sessions of `namespace` (namespace, name): that
        namespace's own Secret when the platform gives each namespace one, else the operator's shared
        one; None: no read token is configured. A namespace without its own never gets the shared one."""
        if self.config.hub_read_token_namespace_secret:
            return namespace, self.config.hub_read_token_namespace_secret
        if self.config.hub_read_token_secret:
            return self.config.operator_namespace, self.config.hub_read_token_secret
        return None

    async def platform_read_token(self, namespace: str) -> str | None:
        """The Hub read token the platform configured for sessions (and pools) of `namespace`, if any."""
        where = self.platform_read_token_secret(namespace)
        if where is None:
            return None
        data = await self.secrets.get(*where)
        return (data or {}).get(self.config.hub_read_token_key) or None


#: glibc's mallopt parameter M_MMAP_THRESHOLD, and the size from which each allocation is its own mmap.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def fixed_mmap_threshold() -> bool:
    """Every allocation of 128 KiB or more gets its own mapping, returned to the system when freed.

    Each watch event and status write of a session whose tenant filled its metadata (up to the API
    server's 256 KB of annotations) parses such an object; glibc's threshold otherwise rises to the
    largest block freed, so those land in the heap, whose free holes the process keeps: 150 such
    sessions held 25 MiB more than 150 plain ones, none of it live objects. Fixing the threshold (as
    MALLOC_MMAP_THRESHOLD_ would) ends that. False where the C library has no mallopt (musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def build_runtime(config: OperatorConfig, hub: HubClient, kube: KubeClient, namespaces: list[str]) -> Runtime:
    """The caches and coordinators every handler shares, each built once around the two clients."""
    create_slots = CreateSlots.for_config(config, hub.gate.spare)
    prober = EdgeProber(hub.health, config.edge_probe_rate, config.edge_probe_cadence)
    return Runtime(
        config=config,
        hub=hub,
        kube=kube,
        prices=PriceCatalog(hub.hardware_prices, config.catalog_ttl),
        observer=FleetObserver(
            hub.list_owner_spaces,
            f"{config.space_prefix}-",
            config.observe_interval,
            # Listings go closer together only with calls to spare after every create waiting.
            affords=lambda rate: hub.gate.affords(rate, reserved=create_slots.demand()),
            probes_behind=prober.behind,
            probed=prober.probing,
            creates_sending=create_slots.sending,
        ),
        prober=prober,
        secrets=SecretCache(kube.read_secret, config.secret_cache_ttl),
        namespaces=namespaces,
        create_slots=create_slots,
    )


def run_operator(
    config: OperatorConfig, run: RunSettings, handlers: Callable[[Runtime], kopf.OperatorRegistry]
) -> None:
    """Run until SIGINT or SIGTERM; with a lease name, only while holding it. `handlers` binds the
    operator's kopf handlers to the runtime (registry.build_registry, which sits above this module)."""
    fixed_mmap_threshold()
    kopf.configure(verbose=run.verbose, log_format=kopf.LogFormat[run.log_format.upper()])
    # One line per Hub request is noise at INFO; failures are reported by the operator itself.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    config = resolve_config(config)
    lease = lease_settings(run, config)
    liveness_endpoint = run.liveness or None
    elector = LeaderElector(lease) if lease is not None else None
    if config.insecure_trust_approvals:
        log.warning("INSECURE: %s", money.INSECURE_TRUST_WARNING)
    metrics.serve(run.metrics_port)
    kube = KubeClient(
        KubeApi(connections=config.kube_connections),
        recheck_interval=config.approval_recheck_interval,
        instance=own_identity(run),
    )
    rt = build_runtime(config, HubClient(config), kube, list(run.namespaces))
    stop_flag = asyncio.Event()  # set on SIGINT/SIGTERM by kopf's handlers, or by the Lease wait's before
    operator = kopf.operator(
        registry=handlers(rt),
        clusterwide=not rt.namespaces,
        namespaces=rt.namespaces,
        standalone=True,
        identity=KopfIdentity(own_identity(run)),
        liveness_endpoint=liveness_endpoint,
        stop_flag=stop_flag,
    )
    main = (
        operator
        if elector is None
        else run_as_leader(elector, rt.hub.gate, operator, stop_flag, liveness_endpoint)
    )

    def ready() -> tuple[bool, dict[str, Any]]:
        return readiness(elector.standby if elector is not None else None, rt.sync)

    # On uvloop, as kopf's own CLI runs when it is installed: at a thousand sessions it takes less
    # memory and CPU than the default loop (docs/performance.md).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serving_readiness(run.readiness or None, ready, main))
