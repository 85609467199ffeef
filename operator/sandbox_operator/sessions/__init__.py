"""The I/O shell of AgentSessions: observe, decide (core), apply, one loop per session."""
