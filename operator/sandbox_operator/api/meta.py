"""Names of the API: its group, kinds, plurals, the finalizer and labels, and the metadata kept."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

GROUP = "agents.sandbox-operator.dev"


VERSION = "v1alpha1"


KIND = "AgentSession"


PLURAL = "agentsessions"


SINGULAR = "agentsession"


SHORT_NAMES = ["ags"]


API_VERSION = f"{GROUP}/{VERSION}"


#: The warm pool kind: Spaces built ahead, claimed by sessions that name the pool (core/pool.py).
POOL_KIND = "AgentSessionPool"


POOL_PLURAL = "agentsessionpools"


#: The label naming the pool on what the operator makes for it; `status.selector` selects by it.
POOL_LABEL = f"{GROUP}/pool"


POOL_SINGULAR = "agentsessionpool"


POOL_SHORT_NAMES = ["agsp"]


#: The finalizer on every session and pool: the Space goes (or is released) before the object does.
FINALIZER = f"{GROUP}/finalizer"


#: Where kopf keeps its handlers' progress (the finalizer's retries and their outcome): the status stanza
#: of this name, which only the operator writes (the status subresource). In annotations, which anyone
#: who may edit a session writes, a forged "success" of the finalizer would skip the Space's deletion.
HANDLER_PROGRESS = "kopf"


#: What the operator (and kopf, for its finalizer, patches and Events) reads of a session's or pool's
#: metadata. The rest (annotations, labels, managedFields: as large as a tenant likes) is dropped from
#: kopf's copy of the object as each watch event arrives, so memory per object stays bounded.
READ_METADATA = frozenset(
    {"name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp",
     "finalizers"}
)  # fmt: skip


def keep_only_what_is_read(obj: Mapping[str, object]) -> None:
    """Drop, in place, the metadata the operator never reads from an object kopf keeps (its live body)."""
    meta = obj.get("metadata")
    if isinstance(meta, MutableMapping):  # the dict itself: kopf's views of the object read through it
        for key in [key for key in meta if key not in READ_METADATA]:
            del meta[key]


#: The Space secret that carries the sandbox's API token.
SANDBOX_TOKEN_SECRET = "SANDBOX_API_TOKEN"
