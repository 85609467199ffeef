"""The approver's commands: `approvals`, `approve`, `deny` (also the kubectl plugin)."""
