"""An error of ours that a command does not catch itself reaches the user as its message (what,
where, what to do), not as a traceback; control characters in it are escaped, line breaks kept."""

from __future__ import annotations

import pytest

import fieldproof.cli
from fieldproof.errors import ConfigError


def test_an_uncaught_error_of_ours_is_one_clean_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing() -> None:
        raise ConfigError("origin in c.toml \x1b]8;;http://x\x07differs\nfrom the database's")

    monkeypatch.setattr(fieldproof.cli, "cli", failing)
    monkeypatch.setattr("sys.argv", ["fieldproof", "collector", "devices", "approve"])
    with pytest.raises(SystemExit) as exc:
        fieldproof.cli.main()
    assert exc.value.code == (
        "fieldproof collector: origin in c.toml \\x1b]8;;http://x\\x07differs\n"
        "from the database's"
    )


def test_other_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (not one of our errors) keeps its traceback: hiding it would hide the bug."""

    def buggy() -> None:
        raise KeyError("x")

    monkeypatch.setattr(fieldproof.cli, "cli", buggy)
    with pytest.raises(KeyError):
        fieldproof.cli.main()
