"""The Cockpit page in headless Chromium, logged into a real cockpit-ws, against lab host A.

Host A and B run their real sriov-migrationd (mutual TLS, lab CA) and the
VDSM stand-in; the page reaches them through sriov-client as root (the
session's administrative access). The tests run in file order: a session
without administrative access first, the service down last. Screenshots go
to the test's tmp dir; SRIOV_COCKPIT_SHOT=PATH also saves a migration in
progress there (docs/cockpit-migration.png).
"""

from __future__ import annotations

import os
import re
import sys
import uuid

import pytest
from helpers import cockpit as ck

from sriov_lab import domains
from sriov_lab.services import LabServices, LabStandIns

pytestmark = [pytest.mark.lab, pytest.mark.skipif(bool(ck.missing()), reason=ck.missing() or "-")]
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TIMEOUTS = {"rollback_grace": 5, "reconcile_interval": 0.5, "unplug": 3, "plug": 3}


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("cockpit-shots")


@pytest.fixture(scope="module")
def services(lab, tmp_path_factory):
    with LabServices(lab, str(tmp_path_factory.mktemp("cockpit-svc")), **TIMEOUTS) as svc:
        with LabStandIns(lab, hooks_root=str(tmp_path_factory.mktemp("cockpit-hooks"))):
            yield svc


@pytest.fixture(scope="module")
def page(lab, services, tmp_path_factory):
    """(driver, ws): logged in as a fresh user, on the page, administrative access still off."""
    work = tmp_path_factory.mktemp("cockpit")
    user = ck.LocalUser(sudo=True)
    ws = driver = None
    try:
        tls = services.client_args(0)[4:]  # --cert, --key, --ca of the lab's admin
        b = services.services[1]
        user.install_page(str(work / "root"), {
            "client": [os.path.join(os.path.dirname(sys.executable), "sriov-client")],
            "local": services.client_args(0), "dst_args": tls, "refresh": 2,
            "destinations": [{"name": b.host.name, "address": b.host.address, "port": b.port}]})
        ws = ck.CockpitWs(str(work / "cockpit-ws.log"))
        driver = ck.chromium()
        ck.login(driver, ws, user)
        ck.open_page(driver, ws)
        yield driver, ws
    finally:
        if driver is not None:
            driver.quit()
        if ws is not None:
            ws.stop()
        user.remove()


def until(driver, what, timeout=60.0):
    """Wait for *what*; on a timeout, fail showing what the page says instead."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(what)
    except TimeoutException:
        pytest.fail("the page did not get there in %.0f s; it shows:\n%s"
                    % (timeout, driver.find_element(By.TAG_NAME, "body").text[:3000]))


def text_of(driver, css) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return " ".join(e.text for e in found)


def _booted_on_a(vms, vnic):
    """A VM on host A with *vnic*, once its guest sees the NIC (one not booted never lets it go)."""
    spec, _ = vms.start(0, vnics=(vnic,))
    domains.wait_serial(vms.hosts[0], spec.name,
                        lambda _ready, ticks: any(vnic.mac in t.nics.values() for t in ticks), 90,
                        "the NIC in the guest")
    return spec


def _fill(driver, field_id: str, text: str) -> None:
    field = driver.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(text)


@pytest.fixture(scope="module")
def vm(lab, lab_conns, lab_guest, services):
    from sriov_lab.fixtures import LabVms

    vms = LabVms(tuple(lab.hosts), lab_conns, lab_guest)
    vnic = vms.vnic(0, 0, vlan=100)
    spec = _booted_on_a(vms, vnic)
    yield spec, vnic, vms
    vms.cleanup()


def test_page_without_administrative_access_should_say_so_in_one_line(page, shots):
    driver, _ = page
    banner = until(driver, lambda d: text_of(d, "#banner"))
    driver.save_screenshot(str(shots / "no-superuser.png"))
    assert "no administrative access" in banner and "\n" not in banner
    assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text


def test_page_should_show_the_pool_and_the_vm(page, vm, shots):
    driver, _ = page
    spec, vnic, _ = vm
    assert ck.administrative_access(driver) == ""
    row = '#vms .vm[data-vm="%s"]' % spec.uuid
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row))
    held = '#pool tr[data-vf="%s"][data-state="in_use"]' % vnic.vf_address
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, held))
    driver.save_screenshot(str(shots / "pool-and-vm.png"))
    assert not driver.find_element(By.ID, "banner").is_displayed()
    vm_text = text_of(driver, row)
    assert spec.name in vm_text and vnic.mac in vm_text and vnic.alias in vm_text
    assert "migratable" in vm_text and "not migratable" not in vm_text
    assert "free" in text_of(driver, "#pool")


def test_drain_dry_run_should_show_the_plan_and_change_nothing(page, vm, services):
    driver, _ = page
    spec, vnic, _ = vm
    b = services.services[1]
    before = services.client(1).call("SRIOV.listVfs")
    _fill(driver, "drain-dsts", b.host.name)
    driver.find_element(By.ID, "drain-plan").click()
    table = until(driver, lambda d: text_of(d, "#drain table"))
    row = [line for line in table.splitlines() if b.host.address in line]
    assert row and "planned" in row[0], table
    assert driver.find_element(By.ID, "drain-go").is_displayed()
    assert services.client(1).call("SRIOV.listVfs") == before  # a dry run reserves nothing


def test_a_reservation_should_show_for_whom_and_until_when(page, services):
    driver, _ = page
    vm_id = str(uuid.uuid4())
    res = services.client(0).call("SRIOV.reserveVfs", {"vmID": vm_id, "nics": [{"mac": "52:54:00:aa:bb:01"}],
                                                        "ttl": 600})
    try:
        held = '#pool tr[data-vf="%s"][data-state="reserved"]' % res["nics"][0]["vf"]["address"]
        row = until(driver, lambda d: text_of(d, held))
        assert "for %s until " % vm_id in row and "52:54:00:aa:bb:01" in row
    finally:
        services.client(0).call("SRIOV.releaseVfs", {"vmID": vm_id})


def test_refused_vm_should_show_the_policys_reason_verbatim(page, vm, shots):
    driver, _ = page
    _, _, vms = vm
    vnic = vms.vnic(0, 1, migratable=False)
    spec, _ = vms.start(0, vnics=(vnic,), with_os=False)
    row = '#vms .vm[data-vm="%s"]' % spec.uuid
    until(driver, lambda d: "not migratable" in text_of(d, row))
    driver.save_screenshot(str(shots / "refused.png"))
    why = text_of(driver, row + " .why")
    assert vnic.mac in why and "sriov_migratable" in why
    assert not driver.find_element(By.CSS_SELECTOR, row + " button").is_enabled()


def test_destination_that_does_not_answer_should_be_one_line(page, vm):
    driver, _ = page
    spec, _, _ = vm
    driver.find_element(By.CSS_SELECTOR, '#vms button[data-vm="%s"]' % spec.uuid).click()
    _fill(driver, "dst", "127.0.0.1")
    _fill(driver, "dst-port", str(ck.free_port()))
    driver.find_element(By.ID, "dry-run").click()
    line = until(driver, lambda d: text_of(d, "#plan .refusal"))
    assert line.startswith("Destination 127.0.0.1 does not answer") and "\n" not in line
    assert not driver.find_element(By.ID, "confirm").is_displayed()


def test_migration_through_the_page_should_run_to_its_end(page, vm, services, shots):
    driver, _ = page
    spec, vnic, _ = vm
    b = services.services[1]
    _fill(driver, "dst", b.host.name)
    driver.find_element(By.ID, "dry-run").click()
    until(driver, lambda d: d.find_element(By.ID, "confirm").is_displayed())
    plan = text_of(driver, "#plan")
    assert "reserve 1 VF(s) on %s" % b.host.name in plan and vnic.mac in plan
    driver.find_element(By.ID, "confirm").click()
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#timeline tr[data-step="migrate"]'))
    try:  # VDSM's step while it still runs, for the picture; the lab's takes about 2 s
        WebDriverWait(driver, 10, poll_frequency=0.1).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline .progress"))
    except TimeoutException:
        pass
    driver.save_screenshot(str(shots / "migration-in-progress.png"))
    if os.environ.get("SRIOV_COCKPIT_SHOT"):
        driver.save_screenshot(os.environ["SRIOV_COCKPIT_SHOT"])
    outcome = until(driver, lambda d: text_of(d, "#timeline-outcome.ok, #timeline-outcome.bad"), 180)
    driver.save_screenshot(str(shots / "migration-done.png"))
    assert outcome == "Migrated to %s, every vNIC plugged." % b.host.address, text_of(driver, "#timeline")
    rows = driver.find_elements(By.CSS_SELECTOR, "#timeline tr[data-step]")
    steps = [e.get_attribute("data-step") for e in rows]
    assert steps[:4] == ["check", "reserve", "unplug", "migrate"] and "plug" in steps
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart svg rect.ok"))  # once sriov-client ends
    assert services.client(1).call("SRIOV.migrationStatus", {"vmID": spec.uuid})["running_here"]


def _migrate_through_page(driver, vm_id, dst_name):
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#vms button[data-vm="%s"]:enabled' % vm_id))
    driver.find_element(By.CSS_SELECTOR, '#vms button[data-vm="%s"]' % vm_id).click()
    _fill(driver, "dst", dst_name)
    driver.find_element(By.ID, "dry-run").click()
    until(driver, lambda d: d.find_element(By.ID, "confirm").is_displayed())
    driver.find_element(By.ID, "confirm").click()
    return until(driver, lambda d: text_of(d, "#timeline-outcome.ok, #timeline-outcome.bad"), 180)


def test_a_failed_migration_should_show_what_was_put_back(page, vm, services, shots):
    driver, _ = page
    _, _, vms = vm
    vnic = vms.vnic(0, 2)
    spec = _booted_on_a(vms, vnic)
    vms.start(1, with_os=False, uuid=spec.uuid, name=spec.name + "-on-b")  # B refuses the incoming VM

    outcome = _migrate_through_page(driver, spec.uuid, services.services[1].host.name)

    driver.save_screenshot(str(shots / "migration-rolled-back.png"))
    assert outcome.startswith("rolled-back: "), text_of(driver, "#timeline")
    put_back = text_of(driver, "#timeline ul.vnics")
    assert "%s (%s): plugged on this host" % (vnic.mac, vnic.alias) in put_back
    assert driver.find_elements(By.CSS_SELECTOR, '#timeline tr[data-step="rollback"]')


def test_a_vm_that_left_meanwhile_should_be_one_line_and_change_nothing(page, vm, services):
    driver, _ = page
    _, _, vms = vm
    spec, dom = vms.start(0, vnics=(vms.vnic(0, 3),), with_os=False)
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#vms button[data-vm="%s"]' % spec.uuid))
    driver.find_element(By.CSS_SELECTOR, '#vms button[data-vm="%s"]' % spec.uuid).click()
    b = services.services[1]
    _fill(driver, "dst", b.host.name)
    driver.find_element(By.ID, "dry-run").click()
    until(driver, lambda d: d.find_element(By.ID, "confirm").is_displayed())
    dom.destroy()
    driver.find_element(By.ID, "confirm").click()
    line = until(driver, lambda d: text_of(d, "#timeline .refusal"))
    assert line == "Refused: VM %s is not running on this host (code 2002)" % spec.uuid
    assert not [v for v in services.client(1).call("SRIOV.listVfs") if v["state"] == "reserved"]


def test_drain_through_the_page_should_show_each_vm_live_and_its_outcome(page, vm, services, lab_conns,
                                                                       shots):
    driver, _ = page
    _, _, vms = vm
    vms.cleanup()  # the earlier tests' VMs: a drain takes every SR-IOV VM of this host
    vnic = vms.vnic(0, 4)
    spec = _booted_on_a(vms, vnic)
    b = services.services[1]
    _fill(driver, "drain-dsts", b.host.name)
    driver.find_element(By.ID, "drain-plan").click()
    until(driver, lambda d: d.find_element(By.ID, "drain-go").is_displayed())
    seen = []

    def outcome(d):
        try:
            state = text_of(d, '#drain tr[data-vm="%s"] td.drain-state' % spec.uuid)
        except StaleElementReferenceException:  # the rows are drawn again every half second
            return False
        if state and state not in seen:
            seen.append(state)
            if state.startswith("migrating"):
                d.save_screenshot(str(shots / "drain-in-progress.png"))
        return text_of(d, "#drain-outcome")

    driver.find_element(By.ID, "drain-go").click()
    verdict = until(driver, outcome, 180)

    driver.save_screenshot(str(shots / "drain-done.png"))
    assert verdict == "Drain done: 1 VM(s) migrated.", text_of(driver, "#drain")
    assert any(s.startswith("migrating") for s in seen), seen  # a live row, before the end
    assert seen[-1] == "migrated", seen
    row = text_of(driver, '#drain tr[data-vm="%s"]' % spec.uuid)
    assert b.host.address in row and re.search(r"\d+(\.\d+)? (ms|s)\b", row), row
    assert lab_conns[1].lookupByUUIDString(spec.uuid).isActive()
    # the drain's migration joins the service's recent ones, which the chart draws
    line = until(driver, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#history summary")
                                    if spec.name in e.text])
    assert line[0].endswith("%s → %s: migrated" % (spec.name, b.host.address)), line


def test_service_down_should_be_a_clear_banner(page, services, shots):
    driver, _ = page
    services.services[0].proc.terminate()
    services.services[0].proc.wait(10)
    banner = until(driver, lambda d: text_of(d, "#banner"))
    driver.save_screenshot(str(shots / "service-down.png"))
    assert banner.startswith("The SR-IOV service on this host does not answer")
    assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
