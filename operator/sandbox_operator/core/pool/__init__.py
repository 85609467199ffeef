"""Warm pools, decided without I/O: which Spaces a pool creates, deletes or restarts, which pooled
Space each claiming session gets, and the statuses that record both: `model` (what is decided on),
`fill` (the pool's own pass) and `claims`; callers use this package whole.

Every fact lives on the objects: a pooled Space is recorded in the pool's status (its id chosen
before its duplicate is sent), and a claim is a `claimedBy` written into that status with the
pool's resourceVersion, so two writers can never hand one Space to two sessions. The session then
records `status.spaceId` and `launchType: warm`, and the ownership marker is moved to it afterwards
(`handover_pending` says that is still to do).

A running app reads its secrets only when it starts, and the Hub restarts it for any change (fidelity
row F42): a claim must not touch the Space's secrets, or the session would wait a whole rebuild. So
each pooled Space is built with a sandbox token of its own (`pooled_token`, derived from the pool's
key and the Space's id, so it needs no record of its own and survives any restart), and the claim
hands that token over whole in the session's connection Secret. Each Space also records the digest
of the pool spec it was built for (`build_hash`): one built for another spec is never claimed, and
is replaced.
"""

from __future__ import annotations

from sandbox_operator.core.pool.claims import ClaimRequest as ClaimRequest
from sandbox_operator.core.pool.claims import assign_claims as assign_claims
from sandbox_operator.core.pool.claims import claim_mismatch as claim_mismatch
from sandbox_operator.core.pool.claims import claimed_status as claimed_status
from sandbox_operator.core.pool.claims import cold_status as cold_status
from sandbox_operator.core.pool.claims import handed_over_status as handed_over_status
from sandbox_operator.core.pool.claims import handover_pending as handover_pending
from sandbox_operator.core.pool.fill import claimable as claimable
from sandbox_operator.core.pool.fill import decide_pool as decide_pool
from sandbox_operator.core.pool.fill import summarize as summarize
from sandbox_operator.core.pool.fill import to_observe as to_observe
from sandbox_operator.core.pool.model import POOL_HARDWARE as POOL_HARDWARE
from sandbox_operator.core.pool.model import POOL_WAIT_FRACTION as POOL_WAIT_FRACTION
from sandbox_operator.core.pool.model import WARM_CLAIM as WARM_CLAIM
from sandbox_operator.core.pool.model import CreatePooledSpace as CreatePooledSpace
from sandbox_operator.core.pool.model import DeletePooledSpace as DeletePooledSpace
from sandbox_operator.core.pool.model import Pool as Pool
from sandbox_operator.core.pool.model import PoolAction as PoolAction
from sandbox_operator.core.pool.model import PooledObservation as PooledObservation
from sandbox_operator.core.pool.model import PoolObservation as PoolObservation
from sandbox_operator.core.pool.model import PoolPlan as PoolPlan
from sandbox_operator.core.pool.model import RestartPooledSpace as RestartPooledSpace
from sandbox_operator.core.pool.model import build_hash as build_hash
from sandbox_operator.core.pool.model import desired_replicas as desired_replicas
from sandbox_operator.core.pool.model import pool_refusal as pool_refusal
from sandbox_operator.core.pool.model import pool_spec_as_session as pool_spec_as_session
from sandbox_operator.core.pool.model import pooled_token as pooled_token
from sandbox_operator.core.pool.model import secret_refs as secret_refs
