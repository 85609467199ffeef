"""aiohttp front of the emulator: the Hub's /api routes, the per-Space sandbox app and the /_sim admin API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any, Final, Self, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ValidationError

from . import views
from .admin import HubSimAdmin
from .bodies import (
    BuildFailuresBody,
    CreateBody,
    DelaysBody,
    DeleteBody,
    DuplicateBody,
    FaultBody,
    HardwareBody,
    KeyBody,
    PlantBody,
    RateLimitBody,
    SleepTimeBody,
    StageBody,
)
from .config import HubSimConfig
from .constants import hardware_catalog_json
from .faults import Fault
from .ratelimit import RateLimiter
from .state import CallRecord, HubSimError, HubState, KeyValue, RepoConflict, Space, require_user

logger = logging.getLogger(__name__)

STATE: Final = web.AppKey("hubsim_state", HubState)
#: The Space each app subdomain was last found to be (checked against the state on every use): apps
#: are asked often while they build, and a search through every Space per request would cost O(N).
APP_SPACES: Final = web.AppKey("hubsim_app_spaces", dict[str, str])
#: The Hub's exact wording: with it the client keeps a 401 a plain HfHubHTTPError (fidelity: F2).
INVALID_CREDENTIALS: Final = "Invalid credentials in Authorization header"
_FLAVOR_KEYS: Final = {"hardware": "flavor", "duplicate": "hardware"}

_Body = TypeVar("_Body", bound=BaseModel)


# -- request helpers -----------------------------------------------------------------------------


def _state(request: web.Request) -> HubState:
    return request.app[STATE]


def _base_url(request: web.Request) -> str:
    """The origin the caller used, so URLs work from wherever the emulator is reached."""
    return _state(request).config.public_url or f"{request.scheme}://{request.host}"


def _bearer(request: web.Request, header: str = "Authorization") -> str | None:
    scheme, _, value = request.headers.get(header, "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def _user(request: web.Request) -> str | None:
    token = _bearer(request)
    return _state(request).user_for_token(token) if token else None


def _space_id(request: web.Request) -> str:
    return f"{request.match_info['ns']}/{request.match_info['name']}"


async def _parse(request: web.Request, model: type[_Body]) -> _Body:
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HubSimError(400, f"Invalid request body: {details}") from exc


def _header_safe(text: str) -> str:
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")


def _error_response(error: HubSimError, base_url: str) -> web.Response:
    body: dict[str, Any] = {"error": error.message}
    if isinstance(error, RepoConflict):
        body["url"] = views.space_url(base_url, error.space_id)
    headers = {"X-Error-Message": _header_safe(error.message)}
    if error.code:
        headers["X-Error-Code"] = error.code
    return web.json_response(body, status=error.status, headers=headers)


def _fault_response(fault: Fault) -> web.Response:
    message = f"hubsim injected fault: {fault.status}"
    headers = {"X-Error-Message": message, **fault.headers()}
    if fault.status == 404:
        headers["X-Error-Code"] = "RepoNotFound"
    return web.json_response({"error": message}, status=fault.status, headers=headers)


async def _requested_flavor(request: web.Request, route: str | None) -> str | None:
    """Peek at the flavor asked for, before any fault, so retried hardware calls show in the log."""
    key = _FLAVOR_KEYS.get(route or "")
    if key is None:
        return None
    try:
        body = await request.json()
    except ValueError:
        return None
    flavor = body.get(key) if isinstance(body, dict) else None
    return flavor if isinstance(flavor, str) else None


def _caller(request: web.Request) -> str:
    """Whom a call counts against: the Hub limits users, anonymous callers by address (fidelity: F34)."""
    return _user(request) or f"anonymous@{request.remote}"


def _transient_failure(request: web.Request, route: str | None) -> HubSimError | None:
    if route is None or "ns" not in request.match_info:
        return None
    return _state(request).transient_failure(_user(request), _space_id(request), route)


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids, rate limit, faults, token check, Hub-style errors and the call log, in the Hub's order."""
    state = _state(request)
    route = request.match_info.route.name
    is_api = request.path.startswith("/api/")
    logged = is_api or request.path.startswith("/_sandbox/")
    now = state.now()
    verdict = state.rate_limiter.charge(_caller(request), now) if is_api else None
    fault = state.faults.take(route, is_api, now) if logged and route else None
    flavor = await _requested_flavor(request, route) if logged else None
    try:
        if fault is not None:
            response: web.StreamResponse = _fault_response(fault)
        elif verdict is not None and not verdict.allowed:
            raise HubSimError(429, f"API rate limit reached: {verdict.quota} calls per {verdict.window}s")
        elif is_api and route != "agent_harnesses" and _bearer(request) and _user(request) is None:
            raise HubSimError(401, INVALID_CREDENTIALS)
        elif (failure := _transient_failure(request, route)) is not None:
            raise failure
        else:
            response = await handler(request)
    except HubSimError as error:
        response = _error_response(error, _base_url(request))
    except web.HTTPException as exc:
        response = web.json_response({"error": exc.reason}, status=exc.status)
    if verdict is not None:  # every API answer says where the caller stands (fidelity: F33)
        for name, value in verdict.headers().items():
            response.headers.setdefault(name, value)
    response.headers["X-Request-Id"] = uuid.uuid4().hex
    if logged:
        user = _user(request) if is_api else None
        state.call_counts[(user, route or "unknown", response.status)] += 1
        state.calls.append(
            CallRecord(
                monotonic=now,
                method=request.method,
                path=request.path,
                query=request.query_string,
                route=route or "unknown",
                status=response.status,
                user=user,
                flavor=flavor,
                faulted=fault is not None,
                request_id=response.headers["X-Request-Id"],
            )
        )
    return response


# -- Hub API -------------------------------------------------------------------------------------


async def _whoami(request: web.Request) -> web.Response:
    user = require_user(_user(request))
    return web.json_response(views.whoami_json(user, _state(request).orgs_of(user)))


async def _agent_harnesses(request: web.Request) -> web.Response:
    """The client's background agent-detection fetch (fidelity: F9): no known harnesses."""
    return web.json_response({"standardEnvVars": [], "harnesses": {}})


async def _hardware_catalog(request: web.Request) -> web.Response:
    return web.json_response(hardware_catalog_json())


def _expand(request: web.Request) -> list[str]:
    expand = request.query.getall("expand", [])
    unknown = sorted(set(expand) - views.EXPANDABLE)
    if unknown:
        raise HubSimError(400, f"Invalid expand value(s): {', '.join(unknown)}")
    return expand


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        prefix, _, offset = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if prefix == "offset" and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise HubSimError(400, "Invalid cursor")


async def _list_spaces(request: web.Request) -> web.Response:
    """One page of Spaces; the Link header has the absolute next URL the client needs (fidelity: F14)."""
    state, query = _state(request), request.query
    expand = _expand(request)
    limit = query.get("limit", "")
    if limit and (not limit.isdigit() or int(limit) < 1):
        raise HubSimError(400, "limit must be a positive integer")
    size = min(int(limit), state.config.page_size_max) if limit else state.config.page_size
    start = _decode_cursor(query.get("cursor"))
    spaces = state.list_spaces(_user(request), query.get("author"), query.get("search"))
    full = query.get("full", "").lower() in ("true", "1")
    base = _base_url(request)
    page = [
        views.select(views.space_json(state, space, base), expand, None if full else views.LIST_KEYS)
        for space in spaces[start : start + size]
    ]
    headers = {}
    if start + size < len(spaces):
        params = [(k, v) for k, v in query.items() if k != "cursor"] + [
            ("cursor", _encode_cursor(start + size))
        ]
        headers["Link"] = f'<{base}{request.path}?{urlencode(params)}>; rel="next"'
    return web.json_response(page, headers=headers)


async def _space_info(request: web.Request) -> web.Response:
    state = _state(request)
    expand = _expand(request)
    space = state.visible_space(_user(request), _space_id(request))
    return web.json_response(views.select(views.space_json(state, space, _base_url(request)), expand, None))


async def _create_repo(request: web.Request) -> web.Response:
    user = require_user(_user(request))
    body = await _parse(request, CreateBody)
    space = _state(request).create_space(
        user,
        namespace=body.organization,
        name=body.name,
        repo_type=body.type,
        sdk=body.sdk,
        visibility=body.resolved_visibility(),
        hardware=body.hardware,
        sleep_time=body.sleepTimeSeconds,
        secrets=body.secrets,
        variables=body.variables,
    )
    url = views.space_url(_base_url(request), space.id)
    return web.json_response({"url": url, "name": space.id, "id": space.oid})


async def _delete_repo(request: web.Request) -> web.Response:
    user = require_user(_user(request))
    body = await _parse(request, DeleteBody)
    _state(request).delete_space(user, namespace=body.organization, name=body.name, repo_type=body.type)
    return web.Response(text="OK")


async def _duplicate(request: web.Request) -> web.Response:
    user = require_user(_user(request))
    body = await _parse(request, DuplicateBody)
    space = _state(request).duplicate(
        user,
        _space_id(request),
        target_id=body.repository,
        visibility=body.resolved_visibility(),
        hardware=body.hardware,
        sleep_time=body.sleepTimeSeconds,
        secrets=body.secrets,
        variables=body.variables,
    )
    return web.json_response(
        {"url": views.space_url(_base_url(request), space.id), "filesCopyPending": False}
    )


async def _runtime(request: web.Request) -> web.Response:
    space = _state(request).visible_space(_user(request), _space_id(request))
    return web.json_response(views.runtime_json(space))


async def _request_hardware(request: web.Request) -> web.Response:
    user = require_user(_user(request))
    body = await _parse(request, HardwareBody)
    space = _state(request).request_hardware(user, _space_id(request), body.flavor, body.sleepTimeSeconds)
    return web.json_response(views.runtime_json(space))


async def _sleeptime(request: web.Request) -> web.Response:
    user = require_user(_user(request))
    body = await _parse(request, SleepTimeBody)
    space = _state(request).set_sleep_time(user, _space_id(request), body.seconds)
    return web.json_response(views.runtime_json(space))


async def _pause(request: web.Request) -> web.Response:
    space = _state(request).pause(_user(request), _space_id(request))
    return web.json_response(views.runtime_json(space))


async def _restart(request: web.Request) -> web.Response:
    """`factory=true` is accepted and means the same as a plain restart here (fidelity: F21)."""
    space = _state(request).restart(_user(request), _space_id(request))
    return web.json_response(views.runtime_json(space))


_EntriesView = Callable[[HubState, Any], dict[str, Any]]


def _entry_handlers(kind: str, render: _EntriesView, answer_map: bool) -> tuple[Handler, Handler, Handler]:
    """GET/POST/DELETE of secrets or variables; writes answer {} unless `answer_map` (fidelity: F24, F25)."""

    async def get(request: web.Request) -> web.StreamResponse:
        state = _state(request)
        return web.json_response(render(state, state.writable_space(_user(request), _space_id(request))))

    async def post(request: web.Request) -> web.StreamResponse:
        user = require_user(_user(request))
        item = await _parse(request, KeyValue)
        state = _state(request)
        space = state.set_entry(user, _space_id(request), kind, item)
        return web.json_response(render(state, space) if answer_map else {})

    async def delete(request: web.Request) -> web.StreamResponse:
        user = require_user(_user(request))
        body = await _parse(request, KeyBody)
        state = _state(request)
        space = state.delete_entry(user, _space_id(request), kind, body.key)
        return web.json_response(render(state, space) if answer_map else {})

    return get, post, delete


#: Where the sandbox server reads its own API token; `Authorization` is the Hub edge's.
SANDBOX_AUTH_HEADER: Final = "X-Sandbox-Authorization"


def _app_space_id(request: web.Request, app_subdomain: str) -> str:
    """The Space whose app answers at this subdomain (no Space: the subdomain, which none is named)."""
    state, found = _state(request), request.app[APP_SPACES]
    known = found.get(app_subdomain)
    if known is not None and known in state.spaces:
        return known
    for space_id in state.spaces:
        if views.subdomain(space_id) == app_subdomain:
            found[app_subdomain] = space_id
            return space_id
    return app_subdomain


def _sandbox_app(request: web.Request) -> Space:
    """Every request to a Space's app passes the Hub's edge first (Hub token in `Authorization`),
    then the sandbox server's own check (its token in `X-Sandbox-Authorization`)."""
    state = _state(request)
    space_id = _app_space_id(request, request.match_info["subdomain"])
    state.check_edge(space_id, _bearer(request))
    return state.check_sandbox(space_id, _bearer(request, SANDBOX_AUTH_HEADER))


async def _health(request: web.Request) -> web.Response:
    """`lastActivityTime`: when the sandbox was last used, as a template may report it (fidelity: F41)."""
    state = _state(request)
    space = _sandbox_app(request)
    active = views.iso(state.wall_of(state.last_activity(space)))
    return web.json_response({"status": "ok", "lastActivityTime": active})


async def _app(request: web.Request) -> web.Response:
    """Any other request to the sandbox's API (an agent at work): it counts as use (fidelity: F41)."""
    state = _state(request)
    state.use(_sandbox_app(request))
    return web.json_response({"status": "ok"})


# -- admin API -----------------------------------------------------------------------------------


async def _sim_spaces(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response([views.admin_space_json(state, space) for space in state.all_spaces()])


async def _sim_space(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(views.admin_space_json(state, state.admin_space(_space_id(request))))


async def _sim_plant(request: web.Request) -> web.Response:
    body = await _parse(request, PlantBody)
    state = _state(request)
    space = state.plant(
        body.id,
        private=body.private,
        sdk=body.sdk,
        stage=body.stage,
        hardware=body.hardware,
        variables=body.variables,
        secrets=body.secrets,
    )
    return web.json_response(views.admin_space_json(state, space), status=201)


async def _sim_sleep(request: web.Request) -> web.Response:
    state = _state(request)
    space = state.sleep_now(_space_id(request))
    return web.json_response(views.admin_space_json(state, space))


async def _sim_rate_limit(request: web.Request) -> web.Response:
    """The enforced quota (null: none), the calls counted per caller in the current window, and how
    far into that window the emulator's clock is."""
    state = _state(request)
    if request.method == "PUT":
        body = await _parse(request, RateLimitBody)
        state.rate_limiter = RateLimiter(body.quota, body.window)
    limiter, now = state.rate_limiter, state.now()
    return web.json_response(
        {
            "quota": limiter.quota,
            "window": limiter.window,
            "usage": limiter.usage(now),
            "intoWindow": limiter.into_window(now),
        }
    )


async def _sim_stage(request: web.Request) -> web.Response:
    body = await _parse(request, StageBody)
    state = _state(request)
    space = state.force_stage(_space_id(request), body.stage)
    return web.json_response(views.admin_space_json(state, space))


async def _sim_build_failures(request: web.Request) -> web.Response:
    state = _state(request)
    if request.method == "POST":
        body = await _parse(request, BuildFailuresBody)
        state.build_failures.count, state.build_failures.stage = body.count, body.stage
    return web.json_response({"count": state.build_failures.count, "stage": state.build_failures.stage})


async def _sim_delays(request: web.Request) -> web.Response:
    delays = _state(request).delays
    if request.method == "PUT":
        body = await _parse(request, DelaysBody)
        delays.build = delays.build if body.build is None else body.build
        delays.hardware_switch = (
            delays.hardware_switch if body.hardwareSwitch is None else body.hardwareSwitch
        )
        delays.wake = delays.wake if body.wake is None else body.wake
        delays.transient_errors = (
            delays.transient_errors if body.transientErrors is None else body.transientErrors
        )
        delays.transient_error_calls = (
            delays.transient_error_calls if body.transientErrorCalls is None else body.transientErrorCalls
        )
    return web.json_response(
        {
            "build": delays.build,
            "hardwareSwitch": delays.hardware_switch,
            "wake": delays.wake,
            "transientErrors": delays.transient_errors,
            "transientErrorCalls": delays.transient_error_calls,
        }
    )


async def _sim_faults(request: web.Request) -> web.Response:
    state = _state(request)
    now = state.now()
    if request.method == "POST":
        body = await _parse(request, FaultBody)
        fault = Fault(
            route=body.route,
            status=body.status,
            remaining=body.count,
            expires_at=None if body.seconds is None else now + body.seconds,
            retry_after=body.retryAfter,
        )
        state.faults.add(fault)
        return web.json_response(fault.to_json(now), status=201)
    if request.method == "DELETE":
        state.faults.clear()
    return web.json_response([fault.to_json(now) for fault in state.faults.live(now)])


async def _sim_calls(request: web.Request) -> web.Response:
    state = _state(request)
    if request.method == "DELETE":
        state.calls.clear()
    return web.json_response([views.call_json(state, call) for call in state.calls])


async def _sim_call_counts(request: web.Request) -> web.Response:
    """Calls per user, route and status since the last reset (the log keeps only the latest)."""
    state = _state(request)
    counts = sorted(state.call_counts.items(), key=lambda item: (str(item[0][0]), item[0][1], item[0][2]))
    return web.json_response(
        [{"user": user, "route": route, "status": status, "count": n} for (user, route, status), n in counts]
    )


async def _sim_reset(request: web.Request) -> web.Response:
    _state(request).reset()
    return web.json_response({})


# -- application and runners ---------------------------------------------------------------------


def create_app(config: HubSimConfig) -> web.Application:
    """The emulator as an aiohttp app; each app owns an independent world built from `config`."""
    app = web.Application(middlewares=[_middleware])
    app[STATE] = HubState(config)
    app[APP_SPACES] = {}
    add = app.router.add_route
    space = "/api/spaces/{ns}/{name}"
    add("GET", "/api/whoami-v2", _whoami, name="whoami")
    add("GET", "/api/agent-harnesses", _agent_harnesses, name="agent_harnesses")
    add("GET", "/api/spaces", _list_spaces, name="list_spaces")
    add("GET", "/api/spaces/hardware", _hardware_catalog, name="hardware_catalog")
    add("POST", "/api/repos/create", _create_repo, name="create")
    add("DELETE", "/api/repos/delete", _delete_repo, name="delete")
    add("GET", space, _space_info, name="space_info")
    add("POST", f"{space}/duplicate", _duplicate, name="duplicate")
    add("GET", f"{space}/runtime", _runtime, name="runtime")
    add("POST", f"{space}/hardware", _request_hardware, name="hardware")
    add("POST", f"{space}/sleeptime", _sleeptime, name="sleeptime")
    add("POST", f"{space}/pause", _pause, name="pause")
    add("POST", f"{space}/restart", _restart, name="restart")
    entry_views: dict[str, tuple[_EntriesView, bool]] = {
        "secrets": (views.secrets_json, False),
        "variables": (views.variables_json, True),
    }
    for kind, (render, answer_map) in entry_views.items():
        get, post, delete = _entry_handlers(kind, render, answer_map)
        for method, handler in (("GET", get), ("POST", post), ("DELETE", delete)):
            add(method, f"{space}/{kind}", handler, name=kind)
    add("GET", "/_sandbox/{subdomain}/health", _health, name="health")
    for method in ("GET", "POST"):
        add(method, "/_sandbox/{subdomain}/{path:.+}", _app, name="app")
    add("GET", "/_sim/spaces", _sim_spaces)
    add("POST", "/_sim/spaces", _sim_plant)
    add("GET", "/_sim/spaces/{ns}/{name}", _sim_space)
    add("POST", "/_sim/spaces/{ns}/{name}/stage", _sim_stage)
    add("POST", "/_sim/spaces/{ns}/{name}/sleep", _sim_sleep)
    for method in ("GET", "PUT"):
        add(method, "/_sim/rate-limit", _sim_rate_limit)
    for method in ("GET", "POST"):
        add(method, "/_sim/build-failures", _sim_build_failures)
    for method in ("GET", "PUT"):
        add(method, "/_sim/delays", _sim_delays)
    for method in ("GET", "POST", "DELETE"):
        add(method, "/_sim/faults", _sim_faults)
    for method in ("GET", "DELETE"):
        add(method, "/_sim/calls", _sim_calls)
    add("GET", "/_sim/call-counts", _sim_call_counts)
    add("POST", "/_sim/reset", _sim_reset)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _start(config: HubSimConfig, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Listen and report the real URL (port 0 picks a free port)."""
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port: int = runner.addresses[0][1]
    return runner, _url(host, bound_port)


class HubSimServer:
    """The emulator on a background thread with its own event loop, for tests and embedding.

    Usage: `with HubSimServer(config) as hub: HfApi(endpoint=hub.url, token=...)`.
    """

    def __init__(self, config: HubSimConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self.port = port
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. http://127.0.0.1:41234; pass it as HfApi(endpoint=...)."""
        if self._url is None:
            raise RuntimeError("HubSimServer is not started")
        return self._url

    @property
    def admin(self) -> HubSimAdmin:
        return HubSimAdmin(self.url)

    def start(self) -> Self:
        """Return once the socket listens, so the first request cannot race the startup."""
        if self._thread is not None:
            raise RuntimeError("HubSimServer already started")
        self._thread = threading.Thread(target=self._run, name="hubsim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"hubsim could not listen on {self.host}:{self.port}") from self._startup_error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            runner, self._url = loop.run_until_complete(_start(self.config, self.host, self.port))
        except BaseException as exc:  # reported to start() in the caller's thread
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Close the listener and join the thread; safe to call twice."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._loop = None
        self._url = None
        self._ready.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(config: HubSimConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the emulator in the foreground until SIGINT/SIGTERM (for `sandbox-testbench hubsim`)."""
    asyncio.run(_serve_until_signal(config, host, port))


async def _serve_until_signal(config: HubSimConfig, host: str, port: int) -> None:
    runner, url = await _start(config, host, port)
    logger.info("hubsim: Hub emulator listening on %s", url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
