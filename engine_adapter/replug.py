"""Re-plugging, on the source, the passthrough vNICs a failed migration left unplugged.

Engines from 4.1 on unplug a VM's migratable passthrough vNICs before they
ask VDSM to migrate, and plug them on the destination after a success.
After a failure they leave them unplugged: the VM goes on running on its
source without its VFs. The engine owns the VF bookkeeping, so the vNICs
go back through its REST API (``plugged=true``), never behind its back,
and only those we saw plugged before the migration: a vNIC the admin had
unplugged stays unplugged.
"""

from __future__ import annotations

import logging

from .errors import AdapterError
from .model import nics_to_replug, replug_state

log = logging.getLogger("sriov-engine")


def _names(vnics) -> str:
    return ", ".join("%s (%s)" % (v.name, v.mac) for v in vnics)


def replug_after_failure(engine, vm, host, plugged_before, steps, opts) -> None:
    """Set ``plugged=true`` on each vNIC of *plugged_before* the engine now shows unplugged.

    Every outcome is a cleanup step line; nothing here raises, so the
    migration's own failure stays the command's result.
    """
    if not plugged_before:
        return
    t = opts.clock()
    try:
        verdict, why = _settle(engine, vm, host, opts)
        if verdict == "wait":
            steps.failed("re-plug", "VM %s still %s after %gs; not re-plugged: %s (set plugged=true "
                         "on them once it settles)" % (vm.name, why, opts.replug_wait,
                                                       _names(plugged_before)), t)
            return
        if verdict == "skip":
            steps.done("re-plug", "nothing re-plugged: %s" % why, t, numbered=False)
            return
        todo = nics_to_replug(plugged_before, engine.vnics(vm))
    except AdapterError as e:
        steps.failed("re-plug", "%s; not re-plugged: %s" % (e.message, _names(plugged_before)), t)
        return
    except KeyboardInterrupt:
        steps.failed("re-plug", "interrupted; not re-plugged: %s" % _names(plugged_before), t)
        return
    if not todo:
        steps.done("re-plug", "nothing to re-plug: the engine did not unplug %s"
                   % _names(plugged_before), t, numbered=False)
        return
    _plug_all(engine, vm, todo, steps, opts)


def _settle(engine, vm, host, opts) -> tuple:
    """Wait (bounded) until the VM is no longer migrating: the engine refuses a plug before."""
    deadline = opts.clock() + opts.replug_wait
    while True:
        now = engine.vm(vm.id)
        verdict, why = replug_state(now.status, now.host_id, vm.host_id, host.id)
        if verdict != "wait" or opts.clock() >= deadline:
            return verdict, why
        opts.sleep(opts.poll_interval)


def _plug_all(engine, vm, todo, steps, opts) -> None:
    """Plug each vNIC; report every failure, not only the first."""
    for i, vnic in enumerate(todo):
        t = opts.clock()
        try:
            plugged = engine.plug_vnic(vm, vnic)
        except AdapterError as e:
            steps.failed("re-plug", "%s (%s) still unplugged: %s" % (vnic.name, vnic.mac, e.message), t)
            continue
        except KeyboardInterrupt:
            steps.failed("re-plug", "interrupted; not re-plugged: %s" % _names(todo[i:]), t)
            return
        if plugged is False:
            steps.failed("re-plug", "%s (%s): the engine accepted plugged=true but still shows it "
                         "unplugged" % (vnic.name, vnic.mac), t)
            continue
        log.info("re-plugged vNIC %s of VM %s", vnic.name, vm.name)
        steps.done("re-plug", "%s (%s) plugged again on the source through the engine "
                   "(plugged=true)" % (vnic.name, vnic.mac), t, numbered=False)
