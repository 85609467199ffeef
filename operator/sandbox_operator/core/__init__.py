"""The decision core: pure functions from (session, observation) to (next action, new status).

Nothing here does I/O. Each module imports only those before it in this order:
conditions (types, reasons, Events) -> progress (Reconciling and Stalled) -> model (what is
decided on and returned) -> money, creation (rules) -> lifecycle (`decide`, the state machine).
"""
