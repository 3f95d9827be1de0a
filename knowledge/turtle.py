"""A small Turtle reader, enough for the D3FEND ontology file (no rdflib dependency).

Handles prefixes, prefixed names, IRIs, plain/long/typed/language strings, ``a``,
``;`` / ``,`` lists, blank-node property lists ``[ ... ]`` and collections ``( ... )``.
It returns subjects with their (predicate, object) pairs; blank nodes stay nested
as lists of pairs. It does not expand prefixes other than keeping ``prefix:local``.
"""
from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r'(?P<ws>\s+)|(?P<comment>#[^\n]*)'
    r'|(?P<long>"""(?:[^"\\]|\\.|"(?!""))*""")'
    r'|(?P<str>"(?:[^"\\\n]|\\.)*")'
    r'|(?P<iri><[^>\s]*>)'
    r'|(?P<punct>[\[\]\(\),;])'
    r'|(?P<name>[^\s;,\[\]\(\)"<>]+)',
    re.S,
)
_SUFFIX = re.compile(r'(@[A-Za-z\-]+|\^\^[^\s;,\[\]\(\)]+)')

Obj = Any  # str | list[tuple[str, Obj]] (blank node) | tuple (collection)


def tokenize(text: str) -> list[str]:
    """Turtle tokens; string literals keep their quotes (suffixes like @en are dropped)."""
    out: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"turtle: cannot tokenize at offset {pos}: {text[pos:pos + 40]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        tok = m.group()
        if kind in ("long", "str"):
            s = _SUFFIX.match(text, pos)
            if s:
                pos = s.end()
            out.append(tok)
        elif kind == "name":
            # A statement-ending "." may stick to a name ("ex:a ex:b ex:c."): local names never end in ".".
            if tok.endswith(".") and len(tok) > 1:
                out.extend([tok[:-1], "."])
            else:
                out.append(tok)
        else:
            out.append(tok)
    return out


def literal(tok: str) -> str:
    """The text of a string token."""
    if tok.startswith('"""'):
        body = tok[3:-3]
    elif tok.startswith('"'):
        body = tok[1:-1]
    else:
        return tok
    return body.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


class _Parser:
    def __init__(self, toks: list[str]):
        self.t = toks
        self.i = 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def next(self) -> str:
        tok = self.t[self.i]
        self.i += 1
        return tok

    def obj(self) -> Obj:
        tok = self.next()
        if tok == "[":
            pairs = self.po_list(end="]")
            self.next()  # ]
            return pairs
        if tok == "(":
            items = []
            while self.peek() != ")":
                items.append(self.obj())
            self.next()
            return tuple(items)
        return tok

    def po_list(self, end: str) -> list[tuple[str, Obj]]:
        pairs: list[tuple[str, Obj]] = []
        while self.peek() not in (end, None):
            pred = self.next()
            if pred == ";":
                continue
            pred = "rdf:type" if pred == "a" else pred
            while True:
                pairs.append((pred, self.obj()))
                if self.peek() == ",":
                    self.next()
                    continue
                break
            if self.peek() == ";":
                self.next()
        return pairs


def parse(text: str) -> dict[str, list[tuple[str, Obj]]]:
    """Subjects (prefixed names or IRIs) -> their (predicate, object) pairs, merged across statements."""
    p = _Parser(tokenize(text))
    out: dict[str, list[tuple[str, Obj]]] = {}
    while p.peek() is not None:
        tok = p.next()
        if tok in ("@prefix", "@base", "PREFIX", "BASE"):
            while p.next() != ".":
                pass
            continue
        subj = tok
        if subj == "[":
            p.i -= 1
            subj_pairs = p.obj()
            pairs = p.po_list(end=".")
            p.next()
            out.setdefault("_:anon", []).extend(subj_pairs + pairs)
            continue
        pairs = p.po_list(end=".")
        if p.peek() == ".":
            p.next()
        out.setdefault(subj, []).extend(pairs)
    return out
