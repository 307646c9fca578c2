"""``after_vm_migrate_destination``, kept light: it attaches nothing, and VDSM waits for it.

VDSM reports an arrived VM Up only after this hook point has run
(virt/vm.py ``_completeIncomingMigration``), and the destination's
``sriov-migrationd`` plugs the vNICs through VDSM's ``hotplugNic`` only
once VDSM reports the VM Up. So every millisecond this process takes is
a millisecond more without NICs: it imports our metadata module and the
parser only, and says in one line what the service will plug.
"""

from __future__ import annotations

from sriov_host import metadata
from sriov_host.errors import BadDomainXml, clip
from sriov_host.xmlsafe import parse_xml

from .rc import ERROR, OK, say


def left_to_service(macs) -> str:
    return ("mac=%s: left to sriov-migrationd, which plugs them through VDSM's hotplugNic once "
            "VDSM reports the VM Up" % ", ".join(macs))


def run(data, env) -> int:
    """Name the recorded vNICs still to plug; rc 1 (VDSM logs it) for XML that does not parse."""
    vm_id = env.get("vmId", "")
    try:
        root = parse_xml(data, "domain XML")
        if root.tag != "domain":
            raise BadDomainXml("domain XML root is <%s>, expected <domain>" % clip(root.tag))
        vm_id = vm_id or (root.findtext("uuid") or "").strip() or "?"
        record = metadata.read_record(root)
    except BadDomainXml as e:
        say("vm=%s point=after_vm_migrate_destination: %s" % (vm_id or "?", e.message))
        return ERROR
    todo = record.by_state(metadata.UNPLUGGED) if record else []
    if todo:
        say("vm=%s %s" % (vm_id, left_to_service(r.mac or clip(r.key) for r in todo)))
    return OK
