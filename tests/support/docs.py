"""The documents' fenced blocks, as written, so tests run and compare what users read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


def fenced(path: Path, language: str, containing: str) -> str:
    """The body of the fenced block of that language in `path` that contains `containing`."""
    for block in path.read_text().split(f"```{language}\n")[1:]:
        body = block.split("```", 1)[0]
        if containing in body:
            return body
    raise AssertionError(f"no ```{language} block in {path.name} contains {containing!r}")


def table(path: Path, header: str) -> list[list[str]]:
    """The cells of each row of the Markdown table whose header line starts with `header`."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:  # after the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


#: The comment before a fenced block that a user is not meant to run as it stands, with the reason.
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")
#: A trailing comment that shows what the command prints (`# → ...`); `...` stands for anything.
OUTPUT = "→ "
#: Where a command line's trailing comment starts: two spaces or more, then `# `.
TRAILING_COMMENT = re.compile(r"\s{2,}#\s")


@dataclass(frozen=True)
class Command:
    """One command line of a block (continuation lines joined), with what its comment says it prints
    (`# → text`, also on the comment lines right below it) or that it is `refused`."""

    line: int
    text: str
    prints: tuple[str, ...] = ()
    refused: bool = False


@dataclass(frozen=True)
class ShellBlock:
    """A fenced block of shell a reader may run: ```sh, or a plain block of `$ ` lines (a transcript)."""

    path: Path
    line: int
    body: str
    #: Why it is not run, from `<!-- not run: why -->` on the line before the block; None: it is run.
    not_run: str | None
    #: The plain block right after it: what it prints, shown as a sample.
    sample: str | None
    transcript: bool = False

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    def commands(self) -> list[Command]:
        if self.transcript:
            return _transcript_commands(self)
        commands: list[Command] = []
        lines = self.body.splitlines()
        index = 0
        while index < len(lines):
            start, text = index, lines[index]
            while text.endswith("\\") and index + 1 < len(lines):
                index += 1
                text = text + "\n" + lines[index]
            index += 1
            stripped = text.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                comment = stripped.lstrip("#").strip()
                if comment.startswith(OUTPUT) and commands:
                    last = commands[-1]
                    commands[-1] = Command(last.line, last.text, (*last.prints, comment[len(OUTPUT) :]))
                continue
            command, comment = (*TRAILING_COMMENT.split(text, maxsplit=1), "")[:2]
            prints = (comment[len(OUTPUT) :],) if comment.startswith(OUTPUT) else ()
            line = self.line + 1 + start
            commands.append(Command(line, command.rstrip(), prints, refused=comment.strip() == "refused"))
        return commands


def _transcript_commands(block: ShellBlock) -> list[Command]:
    commands: list[Command] = []
    for offset, text in enumerate(block.body.splitlines()):
        if text.startswith("$ "):
            commands.append(Command(block.line + 1 + offset, text[2:]))
        elif commands and text.strip():
            last = commands[-1]
            commands[-1] = Command(last.line, last.text, (*last.prints, text))
    return commands


def shell_blocks(path: Path) -> list[ShellBlock]:
    """Every block of `path` a reader might paste into a shell, in order, each with its not-run marker."""
    lines = path.read_text().splitlines()
    blocks: list[ShellBlock] = []
    index = 0
    while index < len(lines):
        fence = lines[index]
        if not fence.startswith("```"):
            index += 1
            continue
        language = fence[3:].strip()
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        body = "\n".join(lines[index + 1 : end])
        marker = NOT_RUN.search(lines[index - 1]) if index else None
        transcript = not language and body.startswith("$ ")
        if language in ("sh", "bash", "shell", "console") or transcript:
            after = end + 1
            while after < len(lines) and not lines[after].strip():
                after += 1
            sample = None
            if after < len(lines) and lines[after] == "```" and not transcript:
                sample_end = next(i for i in range(after + 1, len(lines)) if lines[i].startswith("```"))
                sample = "\n".join(lines[after + 1 : sample_end])
            not_run = marker.group(1) if marker else None
            blocks.append(ShellBlock(path, index + 1, body, not_run, sample, transcript))
        index = end + 1
    return blocks


def loosely_matches(expected: str, output: str) -> bool:
    """Whether `output` holds `expected` with any run of whitespace read as one space and `...` as
    anything: how a document shows output (timings, ids and ages elided)."""
    flat = " ".join(output.split())
    position = 0
    for fragment in (" ".join(part.split()) for part in expected.split("...")):
        if not fragment:
            continue
        found = flat.find(fragment, position)
        if found < 0:
            return False
        position = found + len(fragment)
    return True
