"""The API: the AgentSession and AgentSessionPool kinds, the single source of their CRDs' schemas.

Everything a caller needs is named here; the modules hold it by concern (names, shared field types,
each kind, a session's status) and `crd` generates the CustomResourceDefinitions from them.
"""

from sandbox_operator.api.fields import (
    EARLIEST as EARLIEST,
)
from sandbox_operator.api.fields import (
    ENV_NAME_PATTERN as ENV_NAME_PATTERN,
)
from sandbox_operator.api.fields import (
    K8S_NAME_PATTERN as K8S_NAME_PATTERN,
)
from sandbox_operator.api.fields import (
    LATEST as LATEST,
)
from sandbox_operator.api.fields import (
    MAX_APPROVAL_BUDGET_USD as MAX_APPROVAL_BUDGET_USD,
)
from sandbox_operator.api.fields import (
    MAX_APPROVAL_USD_PER_HOUR as MAX_APPROVAL_USD_PER_HOUR,
)
from sandbox_operator.api.fields import (
    MAX_DURATION_SECONDS as MAX_DURATION_SECONDS,
)
from sandbox_operator.api.fields import (
    MAX_POOL_REPLICAS as MAX_POOL_REPLICAS,
)
from sandbox_operator.api.fields import (
    MIN_SLEEP_TIME_SECONDS as MIN_SLEEP_TIME_SECONDS,
)
from sandbox_operator.api.fields import (
    NAMESPACE_PATTERN as NAMESPACE_PATTERN,
)
from sandbox_operator.api.fields import (
    REPO_ID_PATTERN as REPO_ID_PATTERN,
)
from sandbox_operator.api.fields import (
    RFC3339_PATTERN as RFC3339_PATTERN,
)
from sandbox_operator.api.fields import (
    TIME_SCHEMA as TIME_SCHEMA,
)
from sandbox_operator.api.fields import (
    ApiModel as ApiModel,
)
from sandbox_operator.api.fields import (
    Condition as Condition,
)
from sandbox_operator.api.fields import (
    ConditionStatus as ConditionStatus,
)
from sandbox_operator.api.fields import (
    DeletionPolicy as DeletionPolicy,
)
from sandbox_operator.api.fields import (
    Hardware as Hardware,
)
from sandbox_operator.api.fields import (
    HubNamespace as HubNamespace,
)
from sandbox_operator.api.fields import (
    Moment as Moment,
)
from sandbox_operator.api.fields import (
    PositiveSeconds as PositiveSeconds,
)
from sandbox_operator.api.fields import (
    Replicas as Replicas,
)
from sandbox_operator.api.fields import (
    RepoId as RepoId,
)
from sandbox_operator.api.fields import (
    Seconds as Seconds,
)
from sandbox_operator.api.fields import (
    SecretKeySelector as SecretKeySelector,
)
from sandbox_operator.api.fields import (
    SleepSeconds as SleepSeconds,
)
from sandbox_operator.api.fields import (
    SpaceSecretSource as SpaceSecretSource,
)
from sandbox_operator.api.fields import (
    SpecT as SpecT,
)
from sandbox_operator.api.fields import (
    Timestamp as Timestamp,
)
from sandbox_operator.api.fields import (
    at_most as at_most,
)
from sandbox_operator.api.fields import (
    check_repo_id_rules as check_repo_id_rules,
)
from sandbox_operator.api.fields import (
    check_rfc3339 as check_rfc3339,
)
from sandbox_operator.api.fields import (
    field_path as field_path,
)
from sandbox_operator.api.fields import (
    list_map as list_map,
)
from sandbox_operator.api.fields import (
    parse_rfc3339 as parse_rfc3339,
)
from sandbox_operator.api.fields import (
    read_fields as read_fields,
)
from sandbox_operator.api.fields import (
    shifted as shifted,
)
from sandbox_operator.api.meta import (
    API_VERSION as API_VERSION,
)
from sandbox_operator.api.meta import (
    FINALIZER as FINALIZER,
)
from sandbox_operator.api.meta import (
    GROUP as GROUP,
)
from sandbox_operator.api.meta import (
    HANDLER_PROGRESS as HANDLER_PROGRESS,
)
from sandbox_operator.api.meta import (
    KIND as KIND,
)
from sandbox_operator.api.meta import (
    PLURAL as PLURAL,
)
from sandbox_operator.api.meta import (
    POOL_KIND as POOL_KIND,
)
from sandbox_operator.api.meta import (
    POOL_LABEL as POOL_LABEL,
)
from sandbox_operator.api.meta import (
    POOL_PLURAL as POOL_PLURAL,
)
from sandbox_operator.api.meta import (
    POOL_SHORT_NAMES as POOL_SHORT_NAMES,
)
from sandbox_operator.api.meta import (
    POOL_SINGULAR as POOL_SINGULAR,
)
from sandbox_operator.api.meta import (
    READ_METADATA as READ_METADATA,
)
from sandbox_operator.api.meta import (
    SANDBOX_TOKEN_SECRET as SANDBOX_TOKEN_SECRET,
)
from sandbox_operator.api.meta import (
    SHORT_NAMES as SHORT_NAMES,
)
from sandbox_operator.api.meta import (
    SINGULAR as SINGULAR,
)
from sandbox_operator.api.meta import (
    VERSION as VERSION,
)
from sandbox_operator.api.meta import (
    keep_only_what_is_read as keep_only_what_is_read,
)
from sandbox_operator.api.pool import (
    AgentSessionPoolSpec as AgentSessionPoolSpec,
)
from sandbox_operator.api.pool import (
    AgentSessionPoolStatus as AgentSessionPoolStatus,
)
from sandbox_operator.api.pool import (
    PoolClaimant as PoolClaimant,
)
from sandbox_operator.api.pool import (
    PooledSpace as PooledSpace,
)
from sandbox_operator.api.pool import (
    PooledSpaceState as PooledSpaceState,
)
from sandbox_operator.api.pool import (
    read_pool_spec as read_pool_spec,
)
from sandbox_operator.api.session import (
    AgentSessionSpec as AgentSessionSpec,
)
from sandbox_operator.api.session import (
    Approval as Approval,
)
from sandbox_operator.api.session import (
    Denial as Denial,
)
from sandbox_operator.api.session import (
    IdlePolicy as IdlePolicy,
)
from sandbox_operator.api.session import (
    Lifetime as Lifetime,
)
from sandbox_operator.api.session import (
    PoolRef as PoolRef,
)
from sandbox_operator.api.session import (
    immutable as immutable,
)
from sandbox_operator.api.session import (
    read_spec as read_spec,
)
from sandbox_operator.api.session_status import (
    MAX_RECEIPTS as MAX_RECEIPTS,
)
from sandbox_operator.api.session_status import (
    AgentSessionStatus as AgentSessionStatus,
)
from sandbox_operator.api.session_status import (
    ApprovalRecord as ApprovalRecord,
)
from sandbox_operator.api.session_status import (
    HardwareStatus as HardwareStatus,
)
from sandbox_operator.api.session_status import (
    LaunchType as LaunchType,
)
from sandbox_operator.api.session_status import (
    PaidPeriod as PaidPeriod,
)
from sandbox_operator.api.session_status import (
    PausedBy as PausedBy,
)
from sandbox_operator.api.session_status import (
    PendingApproval as PendingApproval,
)
from sandbox_operator.api.session_status import (
    Phase as Phase,
)
from sandbox_operator.api.session_status import (
    Receipt as Receipt,
)
from sandbox_operator.api.session_status import (
    Spend as Spend,
)
