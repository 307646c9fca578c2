"""metadata: our versioned record in the domain metadata."""

from __future__ import annotations

import pytest
from helpers.corpus import read_domain
from lxml import etree

from sriov_host import domxml, metadata
from sriov_host.errors import BadDomainXml

FULL = metadata.VnicRecord(
    alias="ua-vf1", mac="56:6f:1a:2b:00:01", kind="interface", vf_address="0000:05:10.2",
    pf="ens1f0", vlan=100, teaming="ua-virtio", network="sriov-red",
    state=metadata.UNPLUGGED, error="detach timed out", unplug_ms=212.5, plug_ms=11.0,
    rollback_ms=30.5)
BARE = metadata.VnicRecord(alias=None, mac=None, kind="hostdev", vf_address="0000:05:10.3")
RECORD = metadata.MigrationRecord(vnics=(FULL, BARE), host="6c1a1b2e-0000-4000-8000-0000000000aa",
                                  phase="migrating", updated=1700000000.125)


def test_record_should_round_trip_through_xml():
    elem = etree.fromstring(metadata.to_xml(RECORD))
    assert elem.tag == "{%s}migration" % metadata.NS
    assert metadata.read_record(elem) == RECORD


def test_record_should_round_trip_through_domain():
    root = domxml.parse_domain(read_domain("one_vf_vlan"))
    metadata.write_record(root, RECORD)
    metadata.write_record(root, RECORD)  # replaces, never duplicates
    again = domxml.parse_domain(etree.tostring(root))
    assert len(again.findall("metadata/{%s}migration" % metadata.NS)) == 1
    assert metadata.read_record(again) == RECORD
    assert domxml.vdsm_device_networks(again)["56:6f:1a:2b:00:01"] == "sriov-red"


def test_write_record_should_create_metadata_and_remove_with_none():
    root = domxml.parse_domain("<domain><name>x</name></domain>")
    assert metadata.read_record(root) is None
    metadata.write_record(root, RECORD)
    assert metadata.read_record(root).host == RECORD.host
    metadata.write_record(root, None)
    assert metadata.read_record(root) is None


def test_record_xml_should_use_versioned_namespace():
    assert metadata.to_xml(metadata.MigrationRecord()) == (
        '<sriov:migration xmlns:sriov="http://ovirt.org/vdsm-sriov-migration/1.0" '
        'version="1" phase="idle" updated="0.000"/>')


@pytest.mark.parametrize("attrs, fragment", [
    pytest.param('version="2"', "version 2 is not supported", id="future-version"),
    pytest.param('', "version None is not supported", id="no-version"),
    pytest.param('version="one"', "bad version", id="non-numeric-version"),
])
def test_read_record_should_refuse_other_versions(attrs, fragment):
    elem = etree.fromstring('<m:migration xmlns:m="%s" %s/>' % (metadata.NS, attrs))
    with pytest.raises(metadata.RecordError, match=fragment):
        metadata.read_record(elem)


@pytest.mark.parametrize("vnic_attrs, fragment", [
    pytest.param('state="lost"', "unknown vNIC state", id="bad-state"),
    pytest.param('vlan="x"', "bad vNIC field", id="bad-vlan"),
    pytest.param('plug_ms="fast"', "bad vNIC field", id="bad-timing"),
])
def test_read_record_should_refuse_bad_vnic(vnic_attrs, fragment):
    elem = etree.fromstring('<m:migration xmlns:m="%s" version="1"><m:vnic alias="a" %s/>'
                            '</m:migration>' % (metadata.NS, vnic_attrs))
    with pytest.raises(BadDomainXml, match=fragment):
        metadata.read_record(elem)


def test_replace_vnic_should_replace_by_key_and_filter_by_state():
    plugged = FULL.with_state(metadata.PLUGGED, error=None)
    record = RECORD.replace_vnic(plugged)
    assert record.vnics == (plugged, BARE)
    assert record.by_state(metadata.PLUGGED) == [plugged, BARE]
    assert RECORD.by_state(metadata.UNPLUGGED) == [FULL]
