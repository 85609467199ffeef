"""sandbox-operator: one Hugging Face Space sandbox per AgentSession, declaratively."""

__version__ = "0.1.0"
