"""The I/O shell of AgentSessionPools: the pool's loop, its finalizer, and claims."""
