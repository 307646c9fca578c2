"""Hot-plug and hot-unplug on real guests, through sriov_host.devices.

These exercise the wait-for-event-with-timeout code the hooks use: ACPI
hot-unplug on pc (fast), q35 native pciehp (detach returns before the
device is gone), and a guest with no OS (the device is never released).
"""

from __future__ import annotations

import time

import pytest

from sriov_host import devices, domxml
from sriov_host.errors import LibvirtFailure
from sriov_lab import domains

pytestmark = pytest.mark.lab


def _emulated_nic(mac, model="virtio"):
    vnic = domxml.Vnic(alias="ua-%s" % mac.replace(":", ""), mac=mac)
    return vnic.alias, domxml.render_attach(vnic, "0000:05:10.0", mode=domxml.MODE_EMULATED,
                                            model=model)


def _guest_has(mac, present=True):
    return lambda _ready, ticks: ticks and (mac in ticks[-1].nics.values()) == present


@pytest.mark.parametrize("machine,model", [
    pytest.param("pc", "e1000e", id="pc-e1000e"),
    pytest.param("q35", "virtio", id="q35-acpi-virtio"),
])
def test_hotplug_should_add_then_remove_nic_seen_by_guest(lab_hosts, lab_vms, machine, model,
                                                          monkeypatch):
    host = lab_hosts[0]
    spec, dom = lab_vms.start(0, machine=machine)
    domains.wait_ready(host, spec.name)
    mac = "52:54:00:9a:00:%02x" % (1 if machine == "pc" else 2)
    alias, xml = _emulated_nic(mac, model)
    seen = []
    original = devices.notify
    monkeypatch.setattr(devices, "notify", lambda u, a, k: (seen.append((u, a, k)), original(u, a, k)))

    added_ms = devices.attach_and_wait(dom, xml, alias, timeout=10)
    domains.wait_serial(host, spec.name, _guest_has(mac), 30, "NIC %s in guest" % mac)
    removed_ms = devices.detach_and_wait(dom, xml, alias, timeout=15)

    domains.wait_serial(host, spec.name, _guest_has(mac, False), 30, "NIC %s gone" % mac)
    assert (spec.uuid, alias, devices.ADDED) in seen
    assert (spec.uuid, alias, devices.REMOVED) in seen
    assert added_ms < 2000 and removed_ms < 5000
    assert not devices.alias_present(dom, alias)


class DetachSpy:
    """Wraps a libvirt domain; notes whether the device was there when detach returned."""

    def __init__(self, dom, alias):
        self.dom, self.alias = dom, alias
        self.present_after_detach = None

    def __getattr__(self, name):
        return getattr(self.dom, name)

    def detachDeviceFlags(self, xml, flags=0):
        rc = self.dom.detachDeviceFlags(xml, flags)
        self.present_after_detach = devices.alias_present(self.dom, self.alias)
        return rc


def test_native_pciehp_detach_should_wait_for_event_past_the_call(lab_hosts, lab_vms):
    host = lab_hosts[0]
    spec, dom = lab_vms.start(0, machine="q35", native_pciehp=True)
    domains.wait_ready(host, spec.name)
    mac = "52:54:00:9a:01:01"
    alias, xml = _emulated_nic(mac)
    devices.attach_and_wait(dom, xml, alias, timeout=10)
    domains.wait_serial(host, spec.name, _guest_has(mac), 30, "NIC %s in guest" % mac)
    spy = DetachSpy(dom, alias)

    removed_ms = devices.detach_and_wait(spy, xml, alias, timeout=20)

    assert spy.present_after_detach is True  # the call returned, the device stayed
    assert removed_ms > 5000
    assert not devices.alias_present(dom, alias)
    domains.wait_serial(host, spec.name, _guest_has(mac, False), 30, "NIC %s gone" % mac)


def test_detach_should_time_out_on_guest_that_never_releases(lab_vms):
    _spec, dom = lab_vms.start(0, with_os=False)
    alias, xml = _emulated_nic("52:54:00:9a:02:01")
    devices.attach_and_wait(dom, xml, alias, timeout=10)
    start = time.monotonic()

    with pytest.raises(devices.DeviceTimeout) as err:
        devices.detach_and_wait(dom, xml, alias, timeout=1.5)

    elapsed = time.monotonic() - start
    assert 1.5 <= elapsed < 2.5  # one deadline, even though libvirt's call blocks longer
    assert alias in err.value.message and err.value.data["alias"] == alias
    assert devices.alias_present(dom, alias)


def test_attach_should_fail_cleanly_on_a_bad_device(lab_vms):
    _spec, dom = lab_vms.start(0, with_os=False)
    bad = "<interface type='user'><model type='no-such-nic'/><alias name='ua-bad'/></interface>"
    with pytest.raises(LibvirtFailure):
        devices.attach_and_wait(dom, bad, "ua-bad", timeout=5)
