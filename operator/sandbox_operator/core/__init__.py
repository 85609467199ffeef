"""The decision core: pure functions from (session, observation) to (next action, new status).

model -> conditions -> money, creation -> lifecycle: each module imports only those before it.
"""
