"""msix: a VF's MSI-X enable bit from its PCI config space (a guest driver has taken it up)."""

from __future__ import annotations

import pytest

from sriov_host import msix


def config(caps, status_caps=True) -> bytes:
    """256 bytes of config space holding *caps*, ``[(offset, id, payload bytes)]``, chained."""
    space = bytearray(256)
    space[0x06] = 0x10 if status_caps else 0
    space[0x34] = caps[0][0] if caps else 0
    for i, (off, cap_id, payload) in enumerate(caps):
        space[off] = cap_id
        space[off + 1] = caps[i + 1][0] if i + 1 < len(caps) else 0
        space[off + 2:off + 2 + len(payload)] = payload
    return bytes(space)


def next_at(space: bytes, cap: int, pointer: int) -> bytes:
    """*space* with the capability at *cap* pointing on to *pointer*."""
    return space[:cap + 1] + bytes([pointer]) + space[cap + 2:]


PM, MSI = (0x01, b"\x03\x00"), (0x05, b"\x80\x00")


@pytest.mark.parametrize("space,expected", [
    pytest.param(config([(0x40, *PM), (0x50, *MSI), (0x70, 0x11, b"\x02\x80")]), True,
                 id="enabled-third-in-list"),
    pytest.param(config([(0x70, 0x11, b"\x02\x00")]), False, id="disabled"),
    pytest.param(config([(0x70, 0x11, b"\x02\x40")]), False, id="masked-not-enabled"),
    pytest.param(config([(0x40, *PM), (0x50, *MSI)]), None, id="no-msix"),
    pytest.param(config([(0x70, 0x11, b"\x02\x80")], status_caps=False), None, id="no-cap-list"),
    pytest.param(config([(0x40, 0x01, b"")])[:0x3f], None, id="short"),
    pytest.param(next_at(config([(0x40, *PM)]), 0x40, 0x40), None, id="loops-on-itself"),
    pytest.param(next_at(config([(0x40, *PM)]), 0x40, 0x10), None, id="points-into-the-header"),
])
def test_enabled_should_read_the_msix_enable_bit_or_say_it_cannot(space, expected):
    assert msix.enabled(space) is expected


def test_enabled_on_should_read_sysfs_and_say_none_for_a_missing_device(tmp_path):
    dev = tmp_path / "0000:3b:02.1"
    dev.mkdir()
    (dev / "config").write_bytes(config([(0x70, 0x11, b"\x02\x80")]))
    assert msix.enabled_on("0000:3b:02.1", str(tmp_path)) is True
    assert msix.enabled_on("0000:3b:02.2", str(tmp_path)) is None


@pytest.mark.parametrize("driver,bit,expected", [
    pytest.param("vfio-pci", b"\x02\x80", True, id="vfio-enabled"),
    pytest.param("vfio-pci", b"\x02\x00", False, id="vfio-not-yet"),
    pytest.param("mlx5_vfio_pci", b"\x02\x80", True, id="vfio-variant"),
    pytest.param("iavf", b"\x02\x80", False, id="host-driver-enabled"),
    pytest.param(None, b"\x02\x80", True, id="unbound-reads-the-bit"),
])
def test_taken_up_should_count_the_bit_only_under_a_vfio_driver(tmp_path, driver, bit, expected):
    dev = tmp_path / "devices" / "0000:3b:02.1"
    dev.mkdir(parents=True)
    (dev / "config").write_bytes(config([(0x70, 0x11, bit)]))
    if driver:
        (tmp_path / "drivers" / driver).mkdir(parents=True)
        (dev / "driver").symlink_to(tmp_path / "drivers" / driver)
    assert msix.taken_up("0000:3b:02.1", str(tmp_path / "devices")) is expected
    assert msix.taken_up("0000:3b:02.9", str(tmp_path / "devices")) is None


def _vf(tmp_path, driver="vfio-pci", vectors=None, msi_bus=True, bit=b"\x02\x00", full=True):
    """A VF in a fake sysfs: *vectors* entries in msi_irqs (None: no directory)."""
    dev = tmp_path / "devices" / "0000:3b:02.1"
    dev.mkdir(parents=True)
    space = config([(0x70, 0x11, bit)])
    (dev / "config").write_bytes(space if full else space[:64])  # 64 bytes: read without CAP_SYS_ADMIN
    if msi_bus:
        (dev / "msi_bus").write_text("1\n")
    if vectors is not None:
        (dev / "msi_irqs").mkdir()
        for n in range(vectors):
            (dev / "msi_irqs" / str(200 + n)).write_text("msix\n")
    (tmp_path / "drivers" / driver).mkdir(parents=True)
    (dev / "driver").symlink_to(tmp_path / "drivers" / driver)
    return str(tmp_path / "devices")


@pytest.mark.parametrize("vectors,msi_bus,expected", [
    pytest.param(3, True, True, id="vectors-enabled"),
    pytest.param(None, True, False, id="no-vectors-yet"),
    pytest.param(0, True, False, id="empty-dir"),
    pytest.param(None, False, None, id="no-msi-support-and-config-unreadable"),
])
def test_taken_up_should_read_msi_irqs_where_config_space_is_cut_to_64_bytes(
        tmp_path, vectors, msi_bus, expected):
    """The service has no CAP_SYS_ADMIN: msi_irqs is its signal (issue 20 item 8)."""
    sysfs = _vf(tmp_path, vectors=vectors, msi_bus=msi_bus, bit=b"\x02\x80", full=False)
    assert msix.taken_up("0000:3b:02.1", sysfs) is expected


def test_taken_up_should_not_count_vectors_of_a_host_driver(tmp_path):
    sysfs = _vf(tmp_path, driver="igbvf", vectors=3)
    assert msix.taken_up("0000:3b:02.1", sysfs) is False
