"""announce: the RARP frame QEMU's announce sends, and sending it out of a real link."""

from __future__ import annotations

import os
import struct
import time

import pytest
from helpers.wire import rarp_sniffer, rarp_sources, veth_pair

from sriov_host import announce

MAC = "52:54:00:5a:00:01"
MAC_BYTES = bytes.fromhex("5254005a0001")


def test_rarp_frame_should_be_a_broadcast_request_reverse_for_the_mac():
    frame = announce.rarp_frame(MAC)
    assert len(frame) == 60
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC_BYTES
    assert struct.unpack("!H", frame[12:14]) == (announce.ETH_P_RARP,)
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 3)
    assert frame[22:28] == MAC_BYTES and frame[32:38] == MAC_BYTES  # sender and target: the MAC
    assert frame[28:32] == frame[38:42] == b"\0" * 4
    assert frame[42:] == b"\0" * 18


def test_rarp_frame_should_leave_vlan_0_untagged():
    assert announce.rarp_frame(MAC, vlan=0) == announce.rarp_frame(MAC)


def test_rarp_frame_should_carry_the_vlan_tag_before_the_ethertype():
    frame = announce.rarp_frame(MAC, vlan=100)
    assert struct.unpack("!HHH", frame[12:18]) == (announce.ETH_P_8021Q, 100, announce.ETH_P_RARP)
    assert frame[18:26] == announce.rarp_frame(MAC)[14:22]


@pytest.mark.parametrize("mac,vlan,fragment", [
    pytest.param("52:54:00:5a:00", None, "not a MAC", id="short-mac"),
    pytest.param("52:54:00:5a:00:zz", None, "not a MAC", id="not-hex"),
    pytest.param(MAC, 4095, "VLAN id out of range", id="vlan-4095"),
    pytest.param(MAC, -1, "VLAN id out of range", id="vlan-negative"),
])
def test_rarp_frame_should_refuse_bad_input(mac, vlan, fragment):
    with pytest.raises(ValueError, match=fragment):
        announce.rarp_frame(mac, vlan)


def test_send_should_put_every_round_on_the_wire():
    with veth_pair() as (out, into), rarp_sniffer(into) as sniff:
        announce.send(out, [announce.rarp_frame(MAC)], rounds_ms=(0, 20))
        got = [sniff.recv(2048) for _ in range(2)]
    assert all(g[6:12] == MAC_BYTES and g[12:14] == b"\x80\x35" for g in got)


def test_rounds_should_follow_qemus_rounds_with_one_a_second_up_to_the_limit():
    assert announce.rounds() == announce.rounds(0) == announce.ROUNDS_MS
    assert announce.rounds(3) == announce.ROUNDS_MS + (1000, 2000, 3000)
    assert announce.rounds(2.5) == announce.ROUNDS_MS + (1000, 2000)


@pytest.mark.parametrize("still,expected", [
    pytest.param(lambda: True, 3, id="still-here"),
    pytest.param(lambda: False, 1, id="gone"),
    pytest.param(lambda: 1 / 0, 1, id="cannot-tell"),
])
def test_send_should_stop_the_later_rounds_once_the_vnic_has_left(still, expected):
    with veth_pair() as (out, into), rarp_sniffer(into, timeout=0.5) as sniff:
        announce.send(out, [announce.rarp_frame(MAC)], rounds_ms=(0, 20, 40), still=still)
        time.sleep(0.3)
        got = rarp_sources(sniff)
    assert got == [MAC] * expected


def test_send_should_count_the_rounds_from_when_the_guest_is_ready(monkeypatch):
    monkeypatch.setattr(announce, "FOLLOW_UP_MS", 30)  # how often readiness is asked
    answers = iter([False, False, True])
    with veth_pair() as (out, into), rarp_sniffer(into, timeout=0.5) as sniff:
        announce.send(out, [announce.rarp_frame(MAC)], rounds_ms=(0, 20, 40),
                      still=lambda: True, ready=lambda: next(answers))
        assert rarp_sources(sniff) == []  # nothing sent before returning: not ready yet
        time.sleep(0.4)
        got = rarp_sources(sniff)
    assert got == [MAC] * 3


@pytest.mark.parametrize("still,ready", [
    pytest.param(lambda: True, lambda: False, id="never-ready"),
    pytest.param(lambda: False, lambda: True, id="gone-before-ready"),
])
def test_send_should_send_nothing_for_a_guest_that_never_took_up_its_vf_here(monkeypatch, still, ready):
    monkeypatch.setattr(announce, "FOLLOW_UP_MS", 20)
    monkeypatch.setattr(announce, "READY_WAIT_S", 0.1)
    with veth_pair() as (out, into), rarp_sniffer(into, timeout=0.5) as sniff:
        announce.send(out, [announce.rarp_frame(MAC)], rounds_ms=(0, 20), still=still, ready=ready)
        time.sleep(0.4)
        got = rarp_sources(sniff)
    assert got == []


def test_send_should_raise_for_a_missing_link():
    if os.geteuid() != 0:
        pytest.skip("needs CAP_NET_RAW")
    with pytest.raises(OSError):
        announce.send("srnosuchlink0", [announce.rarp_frame(MAC)])


def test_announce_standbys_should_send_each_failover_mac_out_of_its_standbys_bridge():
    from sriov_host import config, domxml, metadata, unplug

    with veth_pair() as (bridge, into), rarp_sniffer(into) as sniff:
        root = domxml.parse_domain(
            "<domain><devices><interface type='bridge'><source bridge='%s'/>"
            "<mac address='%s'/><teaming type='persistent'/><alias name='ua-sb'/></interface>"
            "</devices></domain>" % (bridge, MAC))
        record = metadata.MigrationRecord(vnics=(
            metadata.VnicRecord(alias="ua-vf", mac=MAC, teaming="ua-sb", state=metadata.UNPLUGGED),
            metadata.VnicRecord(alias="ua-plain", mac="52:54:00:5a:00:09",
                                state=metadata.UNPLUGGED)))
        sent = unplug.announce_standbys(config.Config(), root, record)
        frame = sniff.recv(2048)
        off = unplug.announce_standbys(config.Config(announce=False), root, record)
    assert sent == [(MAC, bridge, None)] and off == []
    assert frame[6:12] == MAC_BYTES


@pytest.mark.parametrize("device,taken,expected", [
    pytest.param("hostdev", False, 0, id="hostdev-not-taken-up-yet"),
    pytest.param("hostdev", True, 3, id="hostdev-taken-up"),
    pytest.param("emulated", False, 3, id="emulated-no-pci-device-to-ask"),
])
def test_announce_vnic_should_wait_for_a_failover_guest_to_take_up_its_vf(monkeypatch, device, taken,
                                                                          expected):
    from sriov_host import config, devices, metadata, msix, plug

    monkeypatch.setattr(msix, "taken_up", lambda address: taken)
    monkeypatch.setattr(devices, "still_holds", lambda dom, key, vf: True)
    monkeypatch.setattr(announce, "READY_WAIT_S", 0.2)
    monkeypatch.setattr(announce, "FOLLOW_UP_MS", 50)
    with veth_pair() as (out, into), rarp_sniffer(into, timeout=0.5) as sniff:
        cfg = config.Config(vf_device=device, vf_bridge=out if device == "emulated" else None,
                            announce_for=0)
        rec = metadata.VnicRecord(alias="ua-vf", mac=MAC, vf_address="0000:3b:02.1", pf=out,
                                  teaming="ua-sb", state=metadata.PLUGGED)
        assert plug.announce_vnic(cfg, None, rec) == (out, None)
        time.sleep(0.6)
        got = rarp_sources(sniff)
    assert got == [MAC] * expected
