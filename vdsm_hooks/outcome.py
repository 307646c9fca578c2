"""What a hook handler decided, shared by the source and destination handlers."""

from __future__ import annotations

from sriov_host import domxml, policy

from .rc import OK


class Result:
    """What a handler decided: rc, the plan (for --dry-run), messages."""

    def __init__(self, rc=OK, plan=None, messages=(), rewritten=False):
        self.rc = rc
        self.plan = plan
        self.messages = list(messages)
        self.rewritten = rewritten


def record_plan(vm_id, record_vnics, verdict, reason) -> policy.Plan:
    """A plan built from our record (destination points), all migratable."""
    vnics = tuple(domxml.vnic_from_record(r) for r in record_vnics)
    decisions = tuple(policy.Decision(True, "recorded by the source") for _ in vnics)
    return policy.Plan(vm_id, verdict, reason, vnics, decisions)
