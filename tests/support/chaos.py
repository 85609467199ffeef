"""Chaos run: sessions go through their whole life while the operator is SIGKILLed at random moments.

Each session is created, moved to paid hardware (first without an approval, then with one
naming the flavor, approved by the admin user), moved back to cpu-basic and deleted, while
the operator is killed after a random uptime and restarted. Sessions started near the end
stop before deletion, so that live sessions are checked as well. Then:

* duplicates: a session ever had more than one Space, or its Space was created twice;
* orphans: a Space carrying the marker of a session of the run that no longer exists;
* stuck: a session that did not finish a step in time, or is still terminating at the end;
* unapproved: a Hub hardware call for a paid flavor before the session's spec approved it
  (from the emulator's call log, which records the flavor; the emulator runs in this process,
  so its clock is this process's monotonic clock).

With `pool` > 0 the sessions claim their Spaces from a warm pool of that many (`--pool N`), so
kills land mid-claim as well; then also:

* claimed twice: a Space that two sessions ever named as theirs (status.spaceId, over the run);
* the pool's Spaces count as orphans unless the pool records them, and the pool is deleted at
  the end, which must take its unclaimed Spaces with it.

One line of figures says it all, with the seed, so a failure replays with the same schedule:

    .venv/bin/python hack/chaos.py --kills 200 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sandbox_operator import api
from sandbox_operator.core.model import MARKER_SESSION as SESSION
from sandbox_operator.core.model import MARKER_SESSION_UID as UID
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.controlplane.plane import ADMIN_USER
from sandbox_testbench.dev import install_crd
from sandbox_testbench.hubsim import HubSimAdmin, HubSimConfig, HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    ADMIN_GROUP,
    OPERATOR_TOKEN,
    OWNER,
    READ_TOKEN,
    TEMPLATE,
    OperatorProcess,
    condition,
    install_approval_policy,
    install_read_token,
    pool_manifest,
    session_manifest,
)
from tests.support.kube import api_client, namespaced_path

FREE = "cpu-basic"
PAID = "t4-small"
#: The warm pool's name when the run uses one.
POOL = "chaos-pool"
#: With a pool, this share of the creates is followed by a kill this soon (seconds): mid-claim.
CLAIM_KILL_SHARE = 0.5
CLAIM_KILL_DELAY = (0.0, 0.15)


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    kills: int
    #: Sessions alive at once.
    parallel: int = 4
    #: Operator uptime before each kill, in seconds (uniform); short ones hit its start-up.
    uptime: tuple[float, float] = (0.3, 4.0)
    #: Down time before each restart, in seconds (uniform).
    downtime: tuple[float, float] = (0.0, 0.5)
    #: Longest time one step of a session may take before it counts as stuck.
    step_timeout: float = 120.0
    #: Sessions claim from a warm pool of this many Spaces (0: no pool, every Space is created).
    pool: int = 0


class Step(Enum):
    CREATED = "waiting for Ready on cpu-basic"
    PAID_UNAPPROVED = "waiting for AwaitingApproval"
    APPROVED = "waiting for Ready on paid hardware"
    BACK_TO_FREE = "waiting for Ready back on cpu-basic"
    DELETING = "waiting for the session to go"
    KEPT = "kept for the final checks"
    DONE = "done"


@dataclass
class Life:
    """One session's way through the scenario."""

    name: str
    step: Step
    since: float
    uid: str | None = None
    generation: int = 1
    #: When the approval was sent (monotonic): no paid hardware call may come before.
    approved_at: float | None = None


@dataclass
class ChaosResult:
    seed: int
    iterations: int = 0
    kills: int = 0
    sessions: int = 0
    duplicates: set[str] = field(default_factory=set)
    orphans: set[str] = field(default_factory=set)
    stuck: set[str] = field(default_factory=set)
    unapproved: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Spaces two sessions named as theirs.
    claimed_twice: set[str] = field(default_factory=set)
    #: Sessions that got a pooled Space (launchType warm).
    warm: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates
            or self.orphans
            or self.stuck
            or self.unapproved
            or self.problems
            or self.claimed_twice
        )

    def line(self) -> str:
        return (
            f"chaos: iterations={self.iterations} kills={self.kills} sessions={self.sessions} "
            f"warm={self.warm} duplicates={len(self.duplicates)} claimed_twice={len(self.claimed_twice)} "
            f"orphans={len(self.orphans)} stuck={len(self.stuck)} "
            f"unapproved={len(self.unapproved)} problems={len(self.problems)} "
            f"elapsed={self.elapsed:.0f}s seed={self.seed}"
        )

    def report(self) -> str:
        details = [*self.problems, *self.unapproved]
        details += [f"Space {space} claimed by two sessions" for space in sorted(self.claimed_twice)]
        details += [f"duplicate Space for session uid {uid}" for uid in sorted(self.duplicates)]
        details += [f"orphaned Space {space}" for space in sorted(self.orphans)]
        details += [f"stuck: {name}" for name in sorted(self.stuck)]
        return "\n".join([self.line(), *details])


class Chaos:
    def __init__(
        self,
        config: ChaosConfig,
        kubectl: Kubectl,
        admin: HubSimAdmin,
        operator: OperatorProcess,
        namespace: str,
        call_log_size: int,
    ) -> None:
        self.config = config
        self.call_log_size = call_log_size
        self.kubectl = kubectl
        self.admin = admin
        self.operator = operator
        self.namespace = namespace
        self.rng = random.Random(config.seed)
        self.result = ChaosResult(seed=config.seed)
        self.lives: list[Life] = []
        self.created_at: dict[str, str] = {}  # session uid -> createdAt of its Space
        self.next_kill = 0.0
        #: Space id -> UIDs of every session that named it in status.spaceId during the run.
        self.holders: dict[str, set[str]] = {}
        self.warm: set[str] = set()
        self.pool_uid = ""

    # -- driving ---------------------------------------------------------------------------------

    def run(self) -> ChaosResult:
        began = time.monotonic()
        self.admin.clear_calls()
        if self.config.pool:
            self._start_pool()
        self._schedule_kill()
        while self.result.kills < self.config.kills:
            self._maybe_kill()
            self._tick(keep=False)
        self._ensure_running()
        deadline = time.monotonic() + self.config.step_timeout
        while any(life.step not in (Step.KEPT, Step.DONE) for life in self.lives):
            if time.monotonic() > deadline:
                break
            self._tick(keep=True)
        self._tick(keep=True)  # marks whatever is late as stuck
        self._final_checks()
        self.result.elapsed = time.monotonic() - began
        return self.result

    def _items(self, plural: str) -> list[dict[str, Any]]:
        """The run's sessions or pools, read in-process: the run reads them every tick."""
        listed = api_client(self.kubectl).get(namespaced_path(api.API_VERSION, plural, self.namespace))
        return list(listed["items"])

    def _pool(self) -> dict[str, Any]:
        pool: dict[str, Any] = api_client(self.kubectl).get(
            namespaced_path(api.API_VERSION, api.POOL_PLURAL, self.namespace, POOL)
        )
        return pool

    def _start_pool(self) -> None:
        """The warm pool, filled before the kills begin (so the first claims find ready Spaces)."""
        self.kubectl("apply", "-f", "-", stdin=pool_manifest(POOL, self.namespace, replicas=self.config.pool))

        def filled() -> bool:
            pool = api_client(self.kubectl).get(
                namespaced_path(api.API_VERSION, api.POOL_PLURAL, self.namespace, POOL)
            )
            self.pool_uid = pool["metadata"]["uid"]
            return bool((pool.get("status") or {}).get("ready", 0) >= self.config.pool)

        wait_for(filled, self.config.step_timeout, "the warm pool to fill", interval=0.5)

    def _schedule_kill(self) -> None:
        self.next_kill = time.monotonic() + self.rng.uniform(*self.config.uptime)

    def _maybe_kill(self) -> None:
        if time.monotonic() < self.next_kill:
            return
        self.operator.kill()
        self.result.kills += 1
        time.sleep(self.rng.uniform(*self.config.downtime))
        self.operator.start()
        self._schedule_kill()

    def _ensure_running(self) -> None:
        if self.operator.proc is None or self.operator.proc.poll() is not None:
            self.operator.start()

    def _tick(self, *, keep: bool) -> None:
        sessions = {item["metadata"]["name"]: item for item in self._items(api.PLURAL)}
        self._watch_spaces(sessions)
        for life in self.lives:
            if life.step not in (Step.KEPT, Step.DONE):
                self._advance(life, sessions.get(life.name), keep)
        if not keep:
            while sum(life.step is not Step.DONE for life in self.lives) < self.config.parallel:
                self._create()
        time.sleep(0.1)

    def _create(self) -> None:
        name = f"chaos-{len(self.lives)}"
        spec = {"poolRef": {"name": POOL}} if self.config.pool else {}
        # Kill while the new session claims (between the pool's claim, the session's record and the
        # handover of the token and marker): only once the operator is up, or the kill hits its start.
        mid_claim = bool(self.config.pool) and self.rng.random() < CLAIM_KILL_SHARE and self._live()
        self.kubectl("apply", "-f", "-", stdin=session_manifest(name, self.namespace, **spec))
        self.lives.append(Life(name, Step.CREATED, time.monotonic()))
        self.result.sessions += 1
        if mid_claim:
            self.next_kill = min(self.next_kill, time.monotonic() + self.rng.uniform(*CLAIM_KILL_DELAY))

    def _live(self) -> bool:
        """The operator answers its liveness endpoint (it has started and watches)."""
        url = self.operator.started_env.get("SANDBOX_OPERATOR_LIVENESS", "")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, ValueError):
            return False

    def _patch(self, life: Life, spec: dict[str, Any]) -> None:
        patch = json.dumps({"spec": spec})
        self.kubectl("patch", "ags", life.name, "-n", self.namespace, "--type=merge", "-p", patch)
        life.generation += 1

    def _move(self, life: Life, step: Step) -> None:
        life.step, life.since = step, time.monotonic()

    def _advance(self, life: Life, session: dict[str, Any] | None, keep: bool) -> None:
        if time.monotonic() - life.since > self.config.step_timeout:
            ready = condition(session, "Ready") or {}
            self.result.stuck.add(life.name)
            self.result.problems.append(
                f"{life.name} {life.step.value} for {self.config.step_timeout:.0f}s: "
                f"Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}"
            )
            self._move(life, Step.DONE)
            return
        if life.step is Step.DELETING:
            if session is None:
                self.result.iterations += 1
                self._move(life, Step.DONE)
            return
        if session is None:
            return  # not visible yet right after the apply
        life.uid = session["metadata"]["uid"]
        if life.step is Step.CREATED and self._ready_on(session, life, FREE):
            self._patch(life, {"hardware": PAID})
            self._move(life, Step.PAID_UNAPPROVED)
        elif life.step is Step.PAID_UNAPPROVED and self._awaiting_approval(session, life):
            life.approved_at = time.monotonic()
            # The admin's rights come from its group, which the operator's approver check must be told.
            approval = {
                "hardware": PAID,
                "approvedBy": ADMIN_USER,
                "approverGroups": [ADMIN_GROUP],
                "reason": "chaos run",
            }
            self._patch(life, {"approval": approval})
            self._move(life, Step.APPROVED)
        elif life.step is Step.APPROVED and self._ready_on(session, life, PAID):
            self._patch(life, {"hardware": FREE})
            self._move(life, Step.BACK_TO_FREE)
        elif life.step is Step.BACK_TO_FREE and self._ready_on(session, life, FREE):
            if keep:
                self._move(life, Step.KEPT)
            else:
                self.kubectl("delete", "ags", life.name, "-n", self.namespace, "--wait=false")
                self._move(life, Step.DELETING)

    def _current(self, session: dict[str, Any], life: Life, type_: str) -> dict[str, Any] | None:
        """The condition, if it describes the generation last written."""
        found = condition(session, type_)
        generation = session["metadata"].get("generation")
        if found is None or generation != life.generation or found.get("observedGeneration") != generation:
            return None
        return found

    def _ready_on(self, session: dict[str, Any], life: Life, flavor: str) -> bool:
        ready = self._current(session, life, "Ready")
        hardware = (session.get("status") or {}).get("hardware") or {}
        return ready is not None and ready["status"] == "True" and hardware.get("current") == flavor

    def _awaiting_approval(self, session: dict[str, Any], life: Life) -> bool:
        approved = self._current(session, life, "HardwareApproved")
        return approved is not None and approved["reason"] == "AwaitingApproval"

    # -- checking --------------------------------------------------------------------------------

    def _ours(self) -> list[dict[str, Any]]:
        """The Spaces whose marker names a session of this run's namespace."""
        prefix = f"{self.namespace}/"
        return [s for s in self.admin.spaces() if s["variables"].get(SESSION, "").startswith(prefix)]

    def _watch_spaces(self, sessions: dict[str, dict[str, Any]]) -> None:
        by_uid: dict[str, list[dict[str, Any]]] = {}
        spaces_now = self._ours()
        for space in spaces_now:
            by_uid.setdefault(space["variables"].get(UID, ""), []).append(space)
        for session in sessions.values():
            status = session.get("status") or {}
            if status.get("spaceId"):
                holders = self.holders.setdefault(status["spaceId"], set())
                holders.add(session["metadata"]["uid"])
                if len(holders) > 1:
                    self.result.claimed_twice.add(status["spaceId"])
            if status.get("launchType") == "warm":
                self.warm.add(session["metadata"]["uid"])
        for uid, spaces in by_uid.items():
            if uid == self.pool_uid:
                continue  # the pool's unclaimed Spaces: many, by design
            if len(spaces) > 1:
                self.result.duplicates.add(uid)
            first = self.created_at.setdefault(uid, spaces[0]["createdAt"])
            if spaces[0]["createdAt"] != first:
                self.result.duplicates.add(uid)  # deleted and created again
        for session in sessions.values():
            ready = condition(session, "Ready")
            uid = session["metadata"]["uid"]
            deleting = session["metadata"].get("deletionTimestamp")
            # A warm session is Ready before its Space's marker moves to it: count its recorded Space too.
            named = (session.get("status") or {}).get("spaceId")
            mine = {s["id"] for s in by_uid.get(uid, [])} | {s["id"] for s in spaces_now if s["id"] == named}
            if ready and ready["status"] == "True" and not deleting and len(mine) != 1:
                self.result.problems.append(
                    f"{session['metadata']['name']} is Ready without exactly one Space"
                )

    def _final_checks(self) -> None:
        sessions = self._items(api.PLURAL)
        live = {s["metadata"]["uid"] for s in sessions}
        spaces = self._ours()
        for session in sessions:
            mine = [s for s in spaces if s["variables"].get(UID) == session["metadata"]["uid"]]
            if len(mine) != 1:
                self.result.problems.append(f"{session['metadata']['name']} has {len(mine)} Spaces")
        pooled: set[str] = set()
        if self.config.pool:
            pool = api_client(self.kubectl).get(
                namespaced_path(api.API_VERSION, api.POOL_PLURAL, self.namespace, POOL)
            )
            pooled = {e["spaceId"] for e in (pool.get("status") or {}).get("spaces") or []}
        self.result.warm = len(self.warm)
        # A Space is accounted for by a live session's marker or by the pool's record of it.
        self.result.orphans |= {
            s["id"] for s in spaces if s["variables"].get(UID) not in live and s["id"] not in pooled
        }
        self._check_approvals()
        # Last: everything left is deleted, and must go with its Space.
        self.kubectl("delete", "ags", "--all", "-n", self.namespace, "--wait=false")
        try:
            wait_for(
                lambda: not self._items(api.PLURAL),
                self.config.step_timeout,
                "every session of the run to be deleted",
                interval=0.5,
            )
        except AssertionError:
            left = self._items(api.PLURAL)
            self.result.stuck |= {s["metadata"]["name"] for s in left}
        if self.config.pool:  # deleting the pool deletes its unclaimed Spaces
            self.kubectl("delete", "agsp", POOL, "-n", self.namespace, "--wait=false")
            try:
                wait_for(
                    lambda: not self._items(api.POOL_PLURAL),
                    self.config.step_timeout,
                    "the warm pool to be deleted",
                    interval=0.5,
                )
            except AssertionError:
                self.result.stuck.add(f"pool {POOL}")
        self.result.orphans |= {s["id"] for s in self._ours()}

    def _check_approvals(self) -> None:
        calls = self.admin.calls()
        if len(calls) >= self.call_log_size:
            self.result.problems.append("the emulator's call log overflowed; approvals cannot be checked")
        approved = {life.uid: life.approved_at for life in self.lives if life.uid}
        for call in calls:
            flavor = call["flavor"]
            if call["route"] not in ("hardware", "duplicate") or flavor in (None, FREE):
                continue
            uid = call["path"].split("/ags-")[-1].split("/")[0] if "/ags-" in call["path"] else None
            space_id = call["path"].removeprefix("/api/spaces/").rsplit("/", 1)[0]
            if len(self.holders.get(space_id, ())) == 1:  # a pooled Space: named by its claimant
                (uid,) = self.holders[space_id]
            if call["route"] == "duplicate" or uid not in approved:
                self.result.unapproved.append(f"{call['method']} {call['path']} asked for {flavor}")
                continue
            at = approved[uid]
            if at is None or call["monotonic"] < at:
                self.result.unapproved.append(f"{call['path']} asked for {flavor} before the approval")


#: The call log the long run gives its own emulator: big enough to keep every call.
CALL_LOG_SIZE = 2_000_000


def run_chaos(
    config: ChaosConfig,
    kubectl: Kubectl,
    admin: HubSimAdmin,
    operator: OperatorProcess,
    namespace: str,
    call_log_size: int,
) -> ChaosResult:
    return Chaos(config, kubectl, admin, operator, namespace, call_log_size).run()


def main(argv: list[str] | None = None) -> int:
    """The long run, on a control plane, emulator and operator of its own."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs of the operator (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument("--parallel", type=int, default=4, help="sessions alive at once (default 4)")
    parser.add_argument(
        "--pool", type=int, default=0, help="claim from a warm pool of N Spaces (default 0: none)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    config = ChaosConfig(seed=seed, kills=args.kills, parallel=args.parallel, pool=args.pool)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sandbox-operator-chaos-"))
    plane = ControlPlane(workdir / "control-plane", die_with_parent=True)
    plane.start()
    hub_config = HubSimConfig(
        tokens={OPERATOR_TOKEN: OWNER, READ_TOKEN: OWNER},
        templates=[TEMPLATE],
        build_seconds=0.2,
        hardware_switch_seconds=0.2,
        call_log_size=CALL_LOG_SIZE,
    )
    try:
        with HubSimServer(hub_config) as hub:
            install_crd(plane)
            install_read_token(plane)
            install_approval_policy(plane)
            kubectl = plane.kubectl()
            namespace = f"chaos-{uuid.uuid4().hex[:6]}"
            kubectl("create", "namespace", namespace)
            (workdir / "operator").mkdir(exist_ok=True)
            operator = OperatorProcess(plane.kubeconfig, hub.url, workdir / "operator")
            operator.start()
            try:
                result = run_chaos(config, kubectl, hub.admin, operator, namespace, CALL_LOG_SIZE)
            finally:
                operator.stop()
    finally:
        plane.stop()
    print(result.report() if not result.ok else result.line())
    if not result.ok:
        print(f"operator logs: {workdir / 'operator'}")
    return 0 if result.ok else 1


if __name__ == "__main__":  # the long run, from the repository root: `python -m tests.support.chaos`
    sys.exit(main())
