#!/usr/bin/env python3
"""The long chaos run (see tests/integration/chaos.py): `.venv/bin/python hack/chaos.py --kills 200 --seed 7`.

Starts a control plane, the Hub emulator and the operator of its own, prints one line of
figures with the seed, and exits non-zero if an invariant was broken.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from chaos import main

if __name__ == "__main__":
    sys.exit(main())
