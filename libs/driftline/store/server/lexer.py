"""ClickHouse's lexical rules, as far as a statement policy needs them.

The access policy (``access``) judges a statement by its words, so it must
split SQL where ClickHouse's own lexer does: text inside a string literal, a
heredoc (``$tag$ ... $tag$``) or a comment is never a keyword or a function
name, and a quoted identifier (`` `file` ``, ``"fi\\x6ce"``) is a name like any
other once its escapes are undone. Each rule below was checked against chDB.

Where this lexer and ClickHouse's could disagree (an unterminated string or
comment, a lone ``#``), it falls back to reading the rest as plain code: the
policy then sees more words than ClickHouse runs, never fewer. Nested block
comments are read the same way (ClickHouse nests them; ending at the first
``*/`` only exposes more words).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*|\#[!\s][^\n]*|/\*.*?\*/)
    | (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<heredoc>\$(?P<tag>[A-Za-z0-9_]*)\$.*?\$(?P=tag)\$)
    | (?P<quoted>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
    | (?P<number>[0-9][A-Za-z0-9_.]*(?:[eEpP][+-][0-9]+)?)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<punct>.)
    """,
    re.S | re.X,
)
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.S)
_SIMPLE_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


@dataclass(frozen=True)
class Token:
    """One lexical token: ``kind`` is space, comment, string, heredoc, quoted, number, word or punct."""

    kind: str
    text: str
    start: int

    @property
    def is_name(self) -> bool:
        """A bare or quoted identifier (a keyword is a bare word too)."""
        return self.kind in ("word", "quoted")

    @property
    def name(self) -> str:
        """The identifier ClickHouse sees: quotes removed and escapes undone."""
        if self.kind != "quoted":
            return self.text
        quote, inner = self.text[0], self.text[1:-1]
        return _ESCAPE.sub(_unescape, inner.replace(quote * 2, quote))

    @property
    def is_code(self) -> bool:
        """Not whitespace or a comment."""
        return self.kind not in ("space", "comment")


def _unescape(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if escaped[0] == "x" and len(escaped) == 3:
        return chr(int(escaped[1:], 16))
    return _SIMPLE_ESCAPES.get(escaped, escaped)


def tokenize(sql: str) -> Iterator[Token]:
    """Every token of ``sql``, whitespace and comments included, in order."""
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup if match.lastgroup != "tag" else "heredoc"
        yield Token(kind, match.group(), match.start())


def code_tokens(sql: str) -> list[Token]:
    """The tokens ClickHouse parses: no whitespace, no comments."""
    return [token for token in tokenize(sql) if token.is_code]
