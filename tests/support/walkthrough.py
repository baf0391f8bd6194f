"""The README's walkthrough, read out of README.md: its marked command blocks per user, the
shell variables each user sets, and every other documented ``fieldproof`` command line, so
the tests run (or at least parse) exactly what a person copies.

A walkthrough block is a fenced block right after ``<!-- walkthrough: USER -->`` (commands,
run in order) or ``<!-- walkthrough: USER settings -->`` (``NAME=value`` lines: what the user
sets to their own machine's paths and hosts; the test sets the same names to its stack's)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click

MARK = re.compile(r"^<!-- walkthrough: ([a-z]+)( settings)? -->\s*$")
SETTING = re.compile(r"^([A-Z][A-Z0-9_]*)=(\S*)")
FENCE = "```"


@dataclass(frozen=True)
class Block:
    """One marked fenced block of the README."""

    user: str
    settings: bool
    text: str
    line: int  # 1-based line of its opening fence, for messages

    def commands(self) -> list[str]:
        return shell_commands(self.text)

    def setting_names(self) -> dict[str, str]:
        """NAME -> the README's example value, for a settings block."""
        found: dict[str, str] = {}
        for cmd in self.commands():
            m = SETTING.match(cmd)
            if m is None:
                raise ValueError(f"README line ~{self.line}: not a NAME=value setting: {cmd!r}")
            found[m.group(1)] = m.group(2)
        return found


def shell_commands(text: str) -> list[str]:
    """Each command of a shell block, continuation lines joined; blank and comment-only lines
    dropped. The text of a command is kept as written (bash reads its trailing comment)."""
    commands: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append((pending + line).strip())
        pending = ""
    if pending:
        commands.append(pending.strip())
    return commands


def fenced_blocks(markdown: str) -> list[tuple[int, str, str]]:
    """(line of the opening fence, info string, text) of every fenced block."""
    blocks: list[tuple[int, str, str]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith(FENCE):
            info = lines[i][len(FENCE) :].strip()
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith(FENCE):
                body.append(lines[i])
                i += 1
            blocks.append((start + 1, info, "\n".join(body)))
        i += 1
    return blocks


def walkthrough_blocks(path: Path) -> list[Block]:
    """The marked blocks of ``path``, in the file's order. A mark must sit on the line right
    before an opening fence; a mark anywhere else is an error (it would silently test
    nothing)."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    for n, line in enumerate(lines):
        m = MARK.match(line)
        if m is None:
            continue
        if n + 1 >= len(lines) or not lines[n + 1].startswith(FENCE):
            raise ValueError(f"{path.name} line {n + 1}: walkthrough mark not followed by ```")
        body: list[str] = []
        for follow in lines[n + 2 :]:
            if follow.startswith(FENCE):
                break
            body.append(follow)
        blocks.append(Block(m.group(1), bool(m.group(2)), "\n".join(body), n + 2))
    return blocks


def documented_fieldproof_commands(path: Path) -> list[tuple[int, str]]:
    """Every ``fieldproof …`` command in the shell blocks of ``path`` (not toml/json ones):
    (line of its block, the command from the word ``fieldproof`` on)."""
    found: list[tuple[int, str]] = []
    for line, info, text in fenced_blocks(path.read_text()):
        if info not in ("", "sh", "bash", "shell", "console"):
            continue
        for cmd in shell_commands(text):
            words = shlex.split(cmd, comments=True)
            if "fieldproof" in words:
                found.append((line, shlex.join(words[words.index("fieldproof") :])))
    return found


def parse_problems(root: click.Group, command: str) -> list[str]:
    """What in ``command`` (``fieldproof …``) the CLI would not take: an unknown subcommand
    or an option the subcommand does not have. Values are not checked (they are the
    reader's: ``gw-…``, ``fpe1.…``)."""
    words = shlex.split(command)[1:]
    cmd: click.Command = root
    ctx = click.Context(root)
    path = ["fieldproof"]
    options = {o for p in root.params for o in (*p.opts, *p.secondary_opts)}
    i = 0
    while isinstance(cmd, click.Group):
        while i < len(words) and words[i].startswith("-"):
            if words[i].split("=")[0] not in options:
                return [f"{' '.join(path)} has no option {words[i]}"]
            i += 1 if "=" in words[i] else 2
        if i >= len(words):
            return [f"{' '.join(path)} needs a subcommand"]
        sub = cmd.get_command(ctx, words[i])
        if sub is None:
            return [f"{' '.join(path)} has no subcommand {words[i]!r}"]
        path.append(words[i])
        cmd = sub
        ctx = click.Context(cmd, parent=ctx)
        options = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        i += 1
    problems = []
    for word in words[i:]:
        if word.startswith("-") and len(word) > 1 and word.split("=")[0] not in options:
            problems.append(f"{' '.join(path)} has no option {word}")
    return problems
