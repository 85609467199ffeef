#!/usr/bin/env python3
"""The long chaos run (see tests/support/chaos.py): `.venv/bin/python hack/chaos.py --kills 200 --seed 7`
(`--pool 4`: the sessions claim from a warm pool, and kills land mid-claim).

Starts a control plane, the Hub emulator and the operator of its own, prints one line of
figures with the seed, and exits non-zero if an invariant was broken.
"""

import sys
from pathlib import Path

# A script: the repository root, where `tests` is, is not on its path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.chaos import main

if __name__ == "__main__":
    sys.exit(main())
