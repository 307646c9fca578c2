"""The one hardened XML parser used for every untrusted document.

Domain XML reaches the hooks from VDSM and nodedev XML from files an
admin points us at; both are parsed with entities, DTDs and network
access off, and with a size bound, so a hostile document fails with a
one-line error instead of a traceback or an entity bomb.
"""

from __future__ import annotations

from lxml import etree

from .errors import SHOWN_CHARS, BadDomainXml, one_line

MAX_XML_BYTES = 16 * 1024 * 1024

_PARSER_OPTS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=False,
)


def parse_xml(data, what: str = "domain XML", error=BadDomainXml) -> etree._Element:
    """Parse *data* (bytes or str) and return the root element.

    Any document type declaration is refused outright: libvirt never
    produces one, and refusing it closes XXE and billion-laughs at once.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data or not data.strip():
        raise error("%s is empty" % what)
    if len(data) > MAX_XML_BYTES:
        raise error("%s is too large (%d bytes, limit %d)" % (what, len(data), MAX_XML_BYTES))
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise error("%s carries a DTD or entity declaration, which is not allowed" % what)
    parser = etree.XMLParser(**_PARSER_OPTS)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise error("%s is malformed: %s" % (what, one_line(str(e), SHOWN_CHARS * 4))) from e
    except ValueError as e:  # e.g. an encoding declaration on a str
        raise error("%s is malformed: %s" % (what, one_line(str(e), SHOWN_CHARS * 4))) from e
    if root is None:
        raise error("%s has no root element" % what)
    if root.getroottree().docinfo.doctype:  # a DTD the byte check could not see (UTF-16...)
        raise error("%s carries a DTD or entity declaration, which is not allowed" % what)
    return root


def to_bytes(root) -> bytes:
    return etree.tostring(root, encoding="utf-8")


def to_text(root) -> str:
    return etree.tostring(root, encoding="unicode")

