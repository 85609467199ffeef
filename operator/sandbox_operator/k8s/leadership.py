"""The operator runs only while it holds the leader Lease (k8s/lease.py): nothing starts before, and
losing it ends the process at once.

Until the Lease is ours, the liveness endpoint answers (a standby is not restarted for waiting as it
should) and SIGINT or SIGTERM stop the wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from aiohttp import web

from sandbox_operator.k8s.lease import LeaderElector
from sandbox_operator.observability.health import serve_json

log = logging.getLogger(__name__)


class Fenced(Protocol):
    """What refuses to act once the Lease may have passed on (the Hub gate): it asks how long is left."""

    lease_left: Callable[[], float]


async def _serve_standby(endpoint: str, elector: LeaderElector) -> web.AppRunner:
    """Answer the liveness endpoint while waiting for the Lease, so that a standby replica (or the
    new pod of a rolling update) is not restarted for waiting as it should. Whether it waits soundly
    is for the readiness endpoint to say."""

    def standby() -> tuple[int, dict[str, Any]]:
        reason = elector.standby.reason if elector.standby is not None else f"waiting for {elector.where}"
        return 200, {"standby": reason}

    return await serve_json(endpoint, standby)


async def _acquire_unless_stopped(elector: LeaderElector, stop_flag: asyncio.Event) -> bool:
    """Wait for the Lease until SIGINT or SIGTERM sets `stop_flag`: whether it is ours to act on.
    kopf installs its own handlers once it starts; until then these set the flag kopf also watches,
    so no signal is lost between the two."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_flag.set)
    acquiring = asyncio.create_task(elector.acquire())
    stopping = asyncio.create_task(stop_flag.wait())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not acquiring.done():
        acquiring.cancel()
        await asyncio.gather(acquiring, return_exceptions=True)
        log.info("stopped while waiting for the leader Lease %s", elector.where)
        return False
    acquiring.result()  # a Lease that cannot be had at all (its namespace missing) raises here
    return not stop_flag.is_set()


async def run_as_leader(
    elector: LeaderElector,
    gate: Fenced,
    main: Coroutine[Any, Any, None],
    stop_flag: asyncio.Event,
    liveness_endpoint: str | None = None,
) -> None:
    """Run `main` (kopf's operator, watching `stop_flag`) only while holding the Lease.

    Nothing starts before the Lease is ours, and the Hub gate refuses every request once the
    Lease may have passed on. Losing the Lease ends the process at once with exit code 1 (the
    Deployment restarts it, and it waits for the Lease again): a graceful stop would still let
    handlers finish and write status while another operator already acts. A stop while waiting
    releases the Lease if we wrote it (a standby shard does), so it blocks no one.
    """
    gate.lease_left = elector.time_left
    try:
        standby = await _serve_standby(liveness_endpoint, elector) if liveness_endpoint else None
        try:
            acquired = await _acquire_unless_stopped(elector, stop_flag)
        finally:
            if standby is not None:
                await standby.cleanup()  # kopf serves the endpoint from now on
        if not acquired:
            await elector.release()
            return
        operator = asyncio.create_task(main)
        keeper = asyncio.create_task(elector.keep())
        done, _ = await asyncio.wait({operator, keeper}, return_when=asyncio.FIRST_COMPLETED)
        if keeper in done:
            log.critical("%s; exiting now so that nothing acts without it", keeper.exception())
            logging.shutdown()
            os._exit(1)
        keeper.cancel()
        await operator
        await elector.release()
    finally:
        main.close()  # never awaited if the wait for the Lease was interrupted; a no-op otherwise
        await elector.close()
