"""Keeps the operator readable in one sitting: no module over 450 lines, no function over 60.

`make lint` runs it over operator/; a module or function past its limit is named with its length, and the
exit status is 1.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def oversized(path: Path) -> list[str]:
    """What in one file is past its limit, one line each."""
    text = path.read_text()
    found = []
    if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
        found.append(f"{path}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                limit = f"at most {MAX_FUNCTION_LINES}"
                found.append(f"{path}:{node.lineno}: {node.name} is {length} lines ({limit})")
    return found


def main(roots: list[str]) -> int:
    found = [line for root in roots for path in sorted(Path(root).rglob("*.py")) for line in oversized(path)]
    within = f"every module within {MAX_MODULE_LINES} lines, every function within {MAX_FUNCTION_LINES}"
    print("\n".join(found) or f"sizes: {within}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["operator"]))
