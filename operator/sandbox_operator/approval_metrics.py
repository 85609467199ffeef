"""The pending-approvals gauge, fed by the watch events of sessions (what `approvals` lists)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from . import metrics


class PendingApprovals:
    """Which sessions wait for an approver, by UID; exports the count per namespace."""

    def __init__(self) -> None:
        self._waiting: dict[str, str] = {}  # uid -> namespace
        self._exported: set[str] = set()

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata", {})
        uid = meta.get("uid")
        if not uid:
            return
        waiting = event_type != "DELETED" and bool((body.get("status") or {}).get("pendingApproval"))
        if waiting:
            self._waiting[uid] = meta.get("namespace", "")
        else:
            self._waiting.pop(uid, None)
        self._export()

    def _export(self) -> None:
        counts = Counter(self._waiting.values())
        for namespace in self._exported - counts.keys():
            metrics.PENDING_APPROVALS.labels(namespace).set(0)
        for namespace, count in counts.items():
            metrics.PENDING_APPROVALS.labels(namespace).set(count)
        self._exported |= counts.keys()


#: The operator's one tracker (the gauge is process-wide too).
pending_approvals = PendingApprovals()
