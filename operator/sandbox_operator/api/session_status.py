"""What the operator reports of an AgentSession: status, phases, approvals on record, receipts, spend."""

from __future__ import annotations

from enum import StrEnum

from pydantic import (
    Field,
)

from sandbox_operator.api.fields import (
    ApiModel,
    Condition,
    list_map,
)


class LaunchType(StrEnum):
    """How a session got its Space: claimed from a warm pool, or created (duplicated) for it."""

    WARM = "warm"
    COLD = "cold"


class HardwareStatus(ApiModel):
    current: str | None = Field(
        default=None, description="Hardware the Space runs on, as the Hub reports it."
    )
    requested: str | None = Field(default=None, description="Hardware requested from the Hub.")


class PendingApproval(ApiModel):
    hardware: str = Field(description="The requested paid flavor.")
    usd_per_hour: float | None = Field(
        default=None, alias="usdPerHour", description="Its price per hour from the Hub's hardware catalog."
    )
    requested_by: str | None = Field(
        default=None, alias="requestedBy", description="Who asked (spec.requestedBy), where known."
    )
    requested_time: str | None = Field(
        default=None,
        alias="requestedTime",
        description="When the session started waiting for an approval of this flavor (RFC 3339).",
    )


class ApprovalRecord(ApiModel):
    """The approval the operator is acting on, as first seen: the clock of its expiry."""

    approved_by: str = Field(alias="approvedBy", description="spec.approval.approvedBy.")
    fingerprint: str = Field(description="Digest of spec.approval; another digest is another approval.")
    seen_time: str = Field(alias="seenTime", description="When the operator first saw it (RFC 3339).")
    expires_at: str | None = Field(
        default=None,
        alias="expiresAt",
        description="When it ends: spec.approval.expiresAt, or sooner by the operator's maximum duration.",
    )
    notice_time: str | None = Field(
        default=None, alias="noticeTime", description="When the Event announcing its expiry was posted."
    )
    inherited_hardware: str | None = Field(
        default=None,
        alias="inheritedHardware",
        description="Set for an approval the previous operator version (0.1.0, which recorded no "
        "approverGroups) acted on after the admission policy was installed: the flavor it was acted on "
        "for. It stays trusted for that flavor, "
        "without a SubjectAccessReview of the approver's groups, until spec.approval or spec.hardware "
        "changes; re-approving (`sandbox-operator approve`) puts it under the full check.",
    )


class PaidPeriod(ApiModel):
    """Paid hardware the Space runs on now, from when, under whose approval: a receipt once it ends."""

    hardware: str = Field(description="The paid flavor.")
    approved_by: str | None = Field(default=None, alias="approvedBy", description="Who approved it.")
    start_time: str = Field(alias="startTime", description="When the Hub first showed it (RFC 3339).")
    start_usd: float = Field(alias="startUsd", description="status.spend.estimatedUsd at that time.")


#: Receipts a session keeps in status (the oldest go first); each is also an Event.
MAX_RECEIPTS = 20


class Receipt(ApiModel):
    """What one stretch of paid hardware cost, kept after the Space is gone."""

    hardware: str = Field(description="The paid flavor.")
    approved_by: str | None = Field(default=None, alias="approvedBy", description="Who approved it.")
    start_time: str = Field(alias="startTime", description="When it began (RFC 3339).")
    end_time: str = Field(alias="endTime", description="When it ended (RFC 3339).")
    hours: float = Field(description="Billed hours (estimated USD over the hourly price).")
    estimated_usd: float = Field(alias="estimatedUsd", description="Estimated spend over that stretch.")
    ended_by: str = Field(
        alias="endedBy",
        description="Why it ended: Downgraded, BudgetSpent, ApprovalExpired, Denied, ApprovalWithdrawn, "
        "HardwareChanged, Paused (spec.paused, by a user or idle pause), SessionDeleted, SpecInvalid (a "
        "spec the operator cannot read), NotJudged (an "
        "approval changed during a failed pass), or the HardwareApproved reason that ended it (e.g. "
        "ApproverNotAuthorized).",
    )


class Spend(ApiModel):
    estimated_usd: float = Field(
        default=0.0,
        alias="estimatedUsd",
        description="Estimated spend so far, from observed time on paid hardware.",
    )
    usd_per_hour: float = Field(default=0.0, alias="usdPerHour", description="Price of the hardware in use.")
    budget_usd: float | None = Field(
        default=None, alias="budgetUsd", description="The approved budget, if any."
    )
    last_observed_time: str | None = Field(
        default=None,
        alias="lastObservedTime",
        description="When spend was last brought up to date (RFC 3339).",
    )
    switch_start_time: str | None = Field(
        default=None,
        alias="switchStartTime",
        description="When a look first showed the Space switching onto paid hardware (RFC 3339); cleared "
        "once it runs on it.",
    )
    switch_back_usd: float = Field(
        default=0.0,
        alias="switchBackUsd",
        description="What the switch back to free hardware is expected to bill: paid hardware bills until "
        "the Hub completes a switch, taken to last as long as the last switch onto it did. The budget "
        "counts as spent this much early, so the bill ends within it.",
    )


class Phase(StrEnum):
    CREATING = "Creating"
    STARTING = "Starting"
    READY = "Ready"
    UPGRADING = "Upgrading"
    #: Going back to free hardware (a downgrade, a spent budget, an ended approval).
    DOWNGRADING = "Downgrading"
    SLEEPING = "Sleeping"
    PAUSED = "Paused"
    FAILED = "Failed"
    DELETING = "Deleting"


class PausedBy(StrEnum):
    USER = "User"
    IDLE = "Idle"


class AgentSessionStatus(ApiModel):
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="The metadata.generation last reconciled."
    )
    phase: Phase | None = Field(default=None, description="Coarse lifecycle phase, for people.")
    space_id: str | None = Field(
        default=None, alias="spaceId", description="The Space of this session, recorded before it is created."
    )
    duplicate_requested_time: str | None = Field(
        default=None,
        alias="duplicateRequestedTime",
        description=(
            "When the operator last asked the Hub to duplicate the template into spaceId (RFC 3339), "
            "recorded before the request is sent. A request not sent within the operator's send deadline "
            "is dropped, so a 'not found' until this time plus that deadline, the Hub timeout and the "
            "visibility grace may mean 'not visible yet', not 'gone'."
        ),
    )
    duplicate_failure: str | None = Field(
        default=None,
        alias="duplicateFailure",
        description=(
            "The Hub's error answer to the last duplicate, until one is sent again: then a 'not found' is "
            "not waited out as 'not visible yet', the duplicate is sent again after the backoff (a Space "
            "that landed anyway answers 409 and is adopted)."
        ),
    )
    space_confirmed_time: str | None = Field(
        default=None,
        alias="spaceConfirmedTime",
        description=(
            "When the Hub first showed spaceId carrying this session's ownership marker (RFC 3339); "
            "after that a 'not found' means the Space was lost, once the token's access is confirmed."
        ),
    )
    marker_cluster_id: str | None = Field(
        default=None,
        alias="markerClusterId",
        description=(
            "The cluster id the Space's ownership marker was last seen with (or written): one of this "
            "installation's previous cluster ids (the operator's --previous-cluster-ids, and 0.1.0's "
            "'default') is rewritten to the current one."
        ),
    )
    token_rotated_time: str | None = Field(
        default=None,
        alias="tokenRotatedTime",
        description="When the sandbox token was last replaced (RFC 3339); a rejected token is "
        "replaced at most once per the operator's rotation interval.",
    )
    url: str | None = Field(default=None, description="The Space's page on the Hub.")
    sandbox_url: str | None = Field(
        default=None, alias="sandboxUrl", description="Base URL of the sandbox API."
    )
    hardware: HardwareStatus | None = Field(default=None, description="Hardware as the Hub reports it.")
    stage: str | None = Field(default=None, description="The Space's stage as the Hub reports it.")
    connection_secret: str | None = Field(
        default=None,
        alias="connectionSecret",
        description=(
            "Secret with the Space id, sandbox URL, sandbox API token and Hub read token, for agent pods "
            "to mount."
        ),
    )
    approved_by: str | None = Field(
        default=None, alias="approvedBy", description="Who approved the paid hardware in use or requested."
    )
    pending_approval: PendingApproval | None = Field(
        default=None,
        alias="pendingApproval",
        description="The paid flavor waiting for an approval, with its price.",
    )
    spend: Spend | None = Field(default=None, description="Estimated spend on paid hardware.")
    expires_at: str | None = Field(
        default=None,
        alias="expiresAt",
        description=(
            "When the operator deletes the session if nothing changes (RFC 3339): the end of its lifetime, "
            "its maximum age, or, while paused, the end of its retention; recomputed as paused time accrues."
        ),
    )
    paused_since: str | None = Field(
        default=None,
        alias="pausedSince",
        description="When the current pause began (RFC 3339); empty while not paused.",
    )
    paused_by: PausedBy | None = Field(
        default=None, alias="pausedBy", description="Who paused the session: User (spec.paused) or Idle."
    )
    paused_seconds: float | None = Field(
        default=None,
        alias="pausedSeconds",
        description="Seconds spent paused in earlier pauses, which do not count against the lifetime.",
        ge=0,
    )
    lifetime_start_time: str | None = Field(
        default=None,
        alias="lifetimeStartTime",
        description=(
            "Where the operator's default lifetime and its maximum age count from (RFC 3339), recorded "
            "once: the session's creation, or, for a session an operator version without lifetimes "
            "(0.1.0) already managed, when this version first saw it (the upgrade)."
        ),
    )
    idle_since: str | None = Field(
        default=None,
        alias="idleSince",
        description=(
            "Since when the sandbox has not been used (RFC 3339), as far as the operator can tell (the "
            "Space asleep, or the activity its health endpoint reports); empty when unknown."
        ),
    )
    approval: ApprovalRecord | None = Field(
        default=None, description="The approval acted on, as first seen (its expiry clock)."
    )
    paid_period: PaidPeriod | None = Field(
        default=None, alias="paidPeriod", description="The stretch of paid hardware in progress."
    )
    receipts: list[Receipt] | None = Field(
        default=None,
        description=f"What each ended stretch of paid hardware cost, newest last (the last {MAX_RECEIPTS}).",
        max_length=MAX_RECEIPTS,
    )
    template: str | None = Field(
        default=None,
        description="The Space the session's Space was duplicated from: spec.template, or the operator's "
        "default template when the Space was made (recorded with the duplicate request, or the claim).",
    )
    launch_type: LaunchType | None = Field(
        default=None,
        alias="launchType",
        description="warm: the Space was claimed from spec.poolRef's pool; cold: it was created for this "
        "session (a session with a poolRef falls back to cold when the pool had no ready Space).",
    )
    claimed_time: str | None = Field(
        default=None,
        alias="claimedTime",
        description="When the Space was claimed from the pool (RFC 3339), recorded with spaceId.",
    )
    failures: int | None = Field(
        default=None, description="Consecutive failed reconciles; drives the retry backoff.", ge=0
    )
    next_retry_time: str | None = Field(
        default=None,
        alias="nextRetryTime",
        description="When the operator retries after a failure (RFC 3339).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Latest observations of the session.",
        json_schema_extra=list_map("type"),
    )
