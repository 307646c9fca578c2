"""The VDSM-like domain XML corpus under ``tests/data/domains``."""

from __future__ import annotations

import os

DOMAINS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "data", "domains")


def read_domain(name: str) -> bytes:
    """The bytes of ``tests/data/domains/<name>.xml``."""
    with open(os.path.join(DOMAINS_DIR, name + ".xml"), "rb") as f:
        return f.read()


def names() -> list:
    """Every document of the corpus, by name."""
    return sorted(n[:-4] for n in os.listdir(DOMAINS_DIR) if n.endswith(".xml"))


_DECL = b"<?xml version='1.0' encoding='%s'?>\n"
HUGE = 1024 * 1024


def _body(data: bytes) -> bytes:
    """The document without its XML declaration, to declare another encoding."""
    if data.startswith(b"<?xml"):
        data = data[data.index(b"?>") + 2:]
    return data.lstrip()


def encoded(data: bytes, encoding: str) -> bytes:
    """The same document in *encoding* (Python's codec: BOM or not), declared as such."""
    return (_DECL % encoding.upper().encode() + _body(data)).decode("utf-8").encode(encoding)


def _first_attr(data: bytes, markers: tuple, attr: bytes, value: bytes) -> bytes:
    """*data* with the first *attr* after *markers* (in turn) set to *value* (unchanged if none)."""
    at = 0
    for marker in markers:
        at = data.find(marker, at)
        if at < 0:
            return data
    for quote in (b"'", b'"'):
        start = data.find(attr + b"=" + quote, at)
        if start >= 0:
            start += len(attr) + 2
            return data[:start] + value + data[data.index(quote, start):]
    return data


def hostile(data: bytes) -> dict:
    """Hostile variants of one document: ``{name: bytes}``.

    Encodings other than UTF-8, a character reference hiding ``hostdev``,
    entities spelling it, 1 MB attribute values, an empty file.
    """
    out = {
        "utf-16": encoded(data, "utf-16"),
        "utf-16be-no-bom": encoded(data, "utf-16be"),
        "utf-32": encoded(data, "utf-32"),
        "latin-1": encoded(data, "iso-8859-1"),
        "utf-8-bom": b"\xef\xbb\xbf" + data,
        "charref": data.replace(b"type='hostdev'", b"type='&#104;ostdev'")
                       .replace(b'type="hostdev"', b'type="&#x68;ostdev"'),
        "huge-mac": _first_attr(data, (b"hostdev", b"<mac "), b"address", b"5" * HUGE),
        "huge-vlan": _first_attr(data, (b"hostdev", b"<tag "), b"id", b"9" * HUGE),
        "huge-bus": _first_attr(data, (b"hostdev", b"<source>"), b"bus", b"0x" + b"f" * HUGE),
        "huge-alias": _first_attr(data, (b"hostdev", b"<alias "), b"name", b"ua-" + b"a" * HUGE),
    }
    if b"hostdev" in data:
        out["entities"] = (b"<!DOCTYPE domain [<!ENTITY h 'host'><!ENTITY d 'dev'>]>\n"
                           + _body(data).replace(b"'hostdev'", b"'&h;&d;'")
                           .replace(b'"hostdev"', b'"&h;&d;"'))
    return {k: v for k, v in out.items() if v != data}


EMPTY = {"empty": b"", "whitespace": b" \n\t\n", "bom-only": b"\xef\xbb\xbf"}
