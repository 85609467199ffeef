"""The decision core: pure functions from (session, observation) to (next action, new status).

Nothing here does I/O, and it imports only `api`, `config.settings` and itself. Each module imports
only those below it (both are import contracts in pyproject.toml): conditions (types, reasons,
Events), prices, fixes -> model (what is decided on and returned), progress (Reconciling and
Stalled) -> money -> receipts, lifetime, creation -> draft (a decision's status under construction),
approvals -> steps (a live session's chain of named steps), deletion (the finalizer's chain), pool
(warm pools), reads -> lifecycle (`decide`, the entry).
"""
