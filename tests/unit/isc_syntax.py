"""Just enough of dhcpd.conf's grammar to see which statements a file holds.

Tests use it to prove that no database value added or closed a statement: every
string literal is decoded the way dhcpd's lexer decodes it (conflex.c).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_PUNCTUATION = "{};,"
_SIMPLE_ESCAPES = {"t": 9, "r": 13, "n": 10, "b": 8}


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "string" (value is the decoded bytes as latin-1 text) or "punct"
    value: str


@dataclass
class Statement:
    tokens: list[Token]
    block: list[Statement] | None = None
    words: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.words = [t.value for t in self.tokens if t.kind != "punct"]


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    data = text.encode("utf-8")
    i = 0
    while i < len(data):
        c = chr(data[i])
        if c.isspace():
            i += 1
        elif c == "#":
            while i < len(data) and data[i] != 0x0A:
                i += 1
        elif c == '"':
            value, i = _string(data, i + 1)
            tokens.append(Token("string", value.decode("latin-1")))
        elif c in _PUNCTUATION:
            tokens.append(Token("punct", c))
            i += 1
        else:
            start = i
            while i < len(data) and not chr(data[i]).isspace() and chr(data[i]) not in '{};,"#':
                i += 1
            tokens.append(Token("word", data[start:i].decode("utf-8")))
    return tokens


def _string(data: bytes, i: int) -> tuple[bytes, int]:
    out = bytearray()
    while True:
        if i >= len(data):
            raise ValueError("end of file inside a string")
        c = chr(data[i])
        if c == '"':
            return bytes(out), i + 1
        if c != "\\":
            out.append(data[i])
            i += 1
            continue
        nxt = chr(data[i + 1])
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            j = i + 1
            while j < len(data) and j < i + 4 and chr(data[j]) in "01234567":
                j += 1
            out.append(int(data[i + 1 : j], 8) & 0xFF)
            i = j
        elif nxt in "xX":
            j = i + 2
            while j < len(data) and j < i + 4 and chr(data[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(data[i + 2 : j], 16))
            i = j
        else:
            out.append(data[i + 1])
            i += 2


def parse(text: str) -> list[Statement]:
    """The file's top-level statements, blocks nested; ValueError if unbalanced."""
    statements, rest = _statements(tokenize(text), 0, top=True)
    assert rest == len(tokenize(text))
    return statements


def _statements(tokens: list[Token], i: int, *, top: bool) -> tuple[list[Statement], int]:
    statements: list[Statement] = []
    current: list[Token] = []
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == Token("punct", ";"):
            statements.append(Statement(current))
            current = []
        elif token == Token("punct", "{"):
            block, i = _statements(tokens, i, top=False)
            statements.append(Statement(current, block))
            current = []
        elif token == Token("punct", "}"):
            if top or current:
                raise ValueError("unbalanced '}' or statement without ';'")
            return statements, i
        else:
            current.append(token)
    if not top or current:
        raise ValueError("end of file inside a block or statement")
    return statements, i
