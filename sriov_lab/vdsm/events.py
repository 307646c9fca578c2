"""The libvirt events VDSM acts on, for the lab's VDSM stand-in.

Copied from oVirt/vdsm ``lib/vdsm/clientIF.py`` (``dispatchLibvirtEvents``):
DEVICE_REMOVED goes to the VM's ``onDeviceRemoved``; a domain STARTED has
its devices read (the stand-in's ``track``). Handled off libvirt's event
loop thread, as VDSM hands them to the VM's own executor.
"""

from __future__ import annotations

import logging
import queue
import threading

log = logging.getLogger(__name__)


class DomainEvents:
    """DEVICE_REMOVED and STARTED of the host's domains, handled off libvirt's loop thread."""

    def __init__(self, standin):
        self.standin = standin
        self._queue: queue.Queue = queue.Queue()
        self._handles: list = []
        self._thread = threading.Thread(target=self._work, name="vdsm-events/%s" % standin.name,
                                        daemon=True)

    def start(self) -> DomainEvents:
        import libvirt

        conn = self.standin.conn
        self._handles = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                        self._removed, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                        self._lifecycle, None)]
        self._thread.start()
        return self

    def _removed(self, _conn, dom, alias, _opaque) -> None:
        self._queue.put((self.standin.device_removed, dom.UUIDString(), alias))

    def _lifecycle(self, _conn, dom, event, _detail, _opaque) -> None:
        import libvirt

        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            self._queue.put((self.standin.track, dom.UUIDString()))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                item[0](*item[1:])
            except Exception:  # noqa: BLE001 - one bad event must not stop the others
                log.exception("%s: handling a libvirt event failed", self.standin.name)

    def stop(self) -> None:
        for handle in self._handles:
            try:
                self.standin.conn.domainEventDeregisterAny(handle)
            except Exception:  # noqa: BLE001 - the daemon may be gone
                pass
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(5)
