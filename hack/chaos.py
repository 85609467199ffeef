#!/usr/bin/env python3
"""The long chaos run (see tests/integration/chaos.py): `.venv/bin/python hack/chaos.py --kills 200 --seed 7`
(`--pool 4`: the sessions claim from a warm pool, and kills land mid-claim).

Starts a control plane, the Hub emulator and the operator of its own, prints one line of
figures with the seed, and exits non-zero if an invariant was broken.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT)]  # chaos.py, and the tests' toolbox

from chaos import main

if __name__ == "__main__":
    sys.exit(main())
