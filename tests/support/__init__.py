"""The tests' one toolbox: polling, the control-plane waits and the decision core's fixtures.

Import it as `tests.support` (the repository root is on pytest's path). Constants the tests need
from the product are imported from `sandbox_operator`, never copied here.
"""

from .polling import wait_for, wait_until

__all__ = ["wait_for", "wait_until"]
