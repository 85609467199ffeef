"""The documents' shell blocks, run as a reader runs them: every ```sh block (and `$ ` transcript) of the
README and docs/*.md, in reading order (DOCUMENTS), as written, in `make dev`'s environment (the local
control plane, the Hub emulator, the chart installed and the operator running with its ServiceAccount). A
block a reader is not meant to run as it stands says so and why, `<!-- not run: why -->` on the line
before it, so no block is skipped silently.

What a block shows is checked loosely, never its timing: `# → text` after a command (or on the comment
lines below it) is what it prints, whitespace-insensitive with `...` for anything, re-run until it shows
(a reader waits and looks again); `# refused` is a command the API server rejects; a plain block right
after a watch (`-w`) is its sample: the watch runs until the sample's last row shows (its NAME, READY and
PHASE), and its header has the sample's columns; every other command must succeed. The one liberty
taken: `.state/dev/`, where `make dev` keeps its state, is this test's own directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from sandbox_testbench.dev import dev_environment
from tests.support.docs import Command, ShellBlock, loosely_matches, shell_blocks
from tests.support.harness import REPO

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

#: The documents in reading order, the order their commands run in: a page that uses what another
#: makes (a session, a namespace, a role) comes after it.
DOCUMENTS = [
    REPO / path
    for path in (
        "README.md",
        "docs/reference.md",
        "docs/status.md",
        "docs/approvals.md",
        "docs/pools-and-lifetimes.md",
        "docs/security.md",
        "docs/sharding.md",
        "docs/operations.md",
        "docs/correctness.md",
        "docs/architecture.md",
        "docs/development.md",
        "docs/hub-fidelity.md",
        "docs/performance.md",
        "docs/memory.md",
    )
]
#: Where the documents say `make dev` keeps its state (its env file is there).
DEV_STATE = ".state/dev/"
#: How long a command may take, and how long a shown output may take to show.
COMMAND_TIMEOUT = 120.0
OUTPUT_PATIENCE = 90.0
#: Dev mode as `make dev` runs it, observing every second instead of every 30: the same commands and
#: outputs, sooner (the documents' timings are never checked).
QUICK_OPERATOR = {"SANDBOX_OPERATOR_OBSERVE_INTERVAL": "1", "SANDBOX_OPERATOR_POLL_INTERVAL": "0.5"}
#: A line of the block that later lines use: a shell function, a variable.
DEFINITION = re.compile(r"^\s*(\w+\(\)\s*\{|[A-Za-z_]\w*=\S*\s*$|export\s)")
#: kubectl's watch, which runs until stopped.
WATCH = re.compile(r"^kubectl\s.*\s(-w|--watch)$")


def runnable(path: Path) -> list[ShellBlock]:
    return [block for block in shell_blocks(path) if block.not_run is None]


@pytest.fixture(scope="module")
def dev_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`make dev`'s environment, started once for every document; a failed start fails, never skips."""
    state = tmp_path_factory.mktemp("dev")
    with ExitStack() as stack:
        try:
            stack.enter_context(dev_environment(state, with_operator=True, operator_settings=QUICK_OPERATOR))
        except Exception as error:  # a missing binary, a control plane that did not start: say which
            pytest.fail(f"make dev's environment did not start: {error}", pytrace=False)
        yield state


class Reader:
    """Runs a document's commands in a shell as a reader would, in the repository's root."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.definitions: list[str] = []

    def script(self, command: Command) -> str:
        text = command.text.replace(DEV_STATE, f"{self.state}/")
        return "\n".join([f"source {self.state / 'env.sh'}", *self.definitions, text])

    def env(self) -> dict[str, str]:
        hidden = ("KUBECONFIG", "HF_ENDPOINT", "HF_TOKEN", "HUBSIM_ADMIN_URL")
        return {key: value for key, value in os.environ.items() if key not in hidden}

    def run(self, command: Command) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.script(command)],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def block(self, block: ShellBlock) -> None:
        self.definitions = []
        for command in block.commands():
            where = f"{block.path.name}:{command.line}: {command.text}"
            if WATCH.search(command.text):
                self.watch(command, block.sample, where)
            elif command.refused:
                result = self.run(command)
                assert result.returncode != 0 and "Forbidden" in result.stderr, f"{where}: admitted"
            elif command.prints:
                self.until_shown(command, where)
            else:
                result = self.run(command)
                assert result.returncode == 0, f"{where}: exit {result.returncode}\n{result.stderr}"
            if DEFINITION.match(command.text):
                self.definitions.append(command.text)

    def until_shown(self, command: Command, where: str) -> None:
        deadline = time.monotonic() + OUTPUT_PATIENCE
        while True:
            result = self.run(command)
            shown = result.stdout + result.stderr
            if all(loosely_matches(expected, shown) for expected in command.prints):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{where}: printed\n{shown}\nnot\n" + "\n".join(command.prints))
            time.sleep(1.0)

    def watch(self, command: Command, sample: str | None, where: str) -> None:
        """A watch runs until the sample's last row shows, then stops, as a reader's Ctrl-C stops it."""
        assert sample, f"{where}: a watch needs its sample output in a plain block right after"
        header, *rows = [line.split() for line in sample.splitlines() if line.strip()]
        awaited = rows[-1][:3]
        proc = subprocess.Popen(
            ["bash", "-c", self.script(command)],
            cwd=REPO,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        seen: list[list[str]] = []
        done = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(line.split())
                if line.split()[:3] == awaited:
                    done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            shown = done.wait(COMMAND_TIMEOUT)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=10)
            reader.join(timeout=10)
        printed = "\n".join(" ".join(row) for row in seen)
        assert shown, f"{where}: no row {awaited} in\n{printed}"
        assert seen[0] == header, f"{where}: columns {seen[0]}, the sample shows {header}"


def test_every_page_has_its_place_in_the_reading_order() -> None:
    """A page added to docs/ runs too: it is listed once, where its commands can run."""
    pages = {REPO / "README.md", *(REPO / "docs").glob("*.md")}
    assert sorted(DOCUMENTS) == sorted(pages)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_the_documents_run_as_written(document: Path, dev_state: Path) -> None:
    reader = Reader(dev_state)
    for block in runnable(document):
        reader.block(block)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_block_parses_and_pastes_whole(document: Path) -> None:
    """Each block, run or not, is shell that parses; a comment after a line's `\\` would end the
    command where a reader pastes it."""
    for block in shell_blocks(document):
        if block.transcript:
            continue
        assert not re.search(r"\\[ \t]+\S", block.body), f"{block.where}: text after a line's `\\`"
        parsed = subprocess.run(["bash", "-n"], input=block.body, capture_output=True, text=True, check=False)
        assert parsed.returncode == 0, f"{block.where}: {parsed.stderr}"
