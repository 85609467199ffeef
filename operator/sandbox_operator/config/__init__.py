"""Configuration: every option defined once, its flags, and what is found out at start."""
