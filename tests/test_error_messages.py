"""Every error message in sclatent says what to do about the error, not only what is wrong."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sclatent as sl

from sclatent_test_helpers import FIX

SRC = Path(sl.__file__).parent


def _text(node: ast.expr) -> str:
    """The literal text of a message, with ``{}`` for each interpolated value."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return ""


def _messages() -> dict[str, str]:
    """Every ``msg = ...`` (the text of every raised error) in the package, by file and line."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "msg" for t in node.targets):
                found[f"{path.relative_to(SRC)}:{node.lineno}"] = _text(node.value)
    return found


MESSAGES = _messages()


def test_the_package_has_messages_to_check():
    assert len(MESSAGES) > 60
    assert all(MESSAGES.values()), [k for k, v in MESSAGES.items() if not v]


@pytest.mark.parametrize("where", MESSAGES)
def test_every_error_message_names_the_fix(where):
    assert FIX.search(MESSAGES[where]), f"{where}: {MESSAGES[where]!r} says what is wrong but not what to do"
