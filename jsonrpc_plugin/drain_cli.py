"""``sriov-client SRIOV evacuate``: follow a drain live, one line per VM change, then a summary.

The drain's JSON goes to stdout when it ends, as every sriov-client
answer does; the progress lines and the summary table (VM, destination,
outcome, NIC-absent time) go to stderr, where an admin watches them. The
exit code is 0 only when every VM migrated; a dry run exits 0 only when
its plan places every VM.
"""

from __future__ import annotations

import json
import sys
import time

from .rpcerrors import RpcError, RpcUnavailable

POLL = 0.5
MISSES = 5  # answers in a row that may fail before the client gives up


def follow_drain(client, started: dict, out=None, err=None, sleep=time.sleep) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if started.get("dry_run"):
        print(json.dumps(started, indent=4, sort_keys=True), file=out)
        for line in plan_lines(started["plan"]):
            print(line, file=err)
        return 0 if started["plan"]["feasible"] else 1
    for line in plan_lines(started["plan"]):
        print(line, file=err)
    seen, misses, drain = {}, 0, None
    while True:
        try:
            drain = client.call("SRIOV.evacuateStatus")
            misses = 0
        except (RpcError, RpcUnavailable) as e:
            misses += 1
            if misses >= MISSES:
                print("sriov-client: lost track of the drain: %s; see SRIOV evacuateStatus" % e, file=err)
                return 1
            sleep(POLL)
            continue
        for row in drain["vms"]:
            line = progress_line(row)
            if seen.get(row["vmID"]) != line:
                seen[row["vmID"]] = line
                print("[%s] %s" % (time.strftime("%H:%M:%S"), line), file=err)
        if drain["ended"] is not None:
            break
        sleep(POLL)
    print(json.dumps(drain, indent=4, sort_keys=True), file=out)
    for line in summary_lines(drain):
        print(line, file=err)
    return 0 if drain["state"] == "done" else 1


def plan_lines(plan: dict) -> list:
    """The plan, one line per VM; then each VM left out and why."""
    lines = ["plan: %s" % ("every VM placed" if plan["feasible"] else "REFUSED: %d VM(s) do not fit"
                           % len(plan["unplaced"]))]
    for v in plan["vms"]:
        lines.append("  %s -> %s (%s): %s" % (v["vmID"], v["dst"], v["numa"], ", ".join(
            "%s on %s" % (n["mac"], n["pf"]) for n in v["nics"]) or "no SR-IOV vNIC"))
    for u in plan["unplaced"]:
        lines.append("  %s: does not fit: %s" % (u["vmID"], u["why"]))
    for d in plan["destinations"]:
        lines.append("  %s: %d VM(s), free VFs %d -> %d" % (d["dst"], d["vms"], d["free_before"],
                                                          d["free_after"]))
    return lines


def progress_line(row: dict) -> str:
    """A VM's state now: its drain state, the migrator's phase and step, and the steps' timings."""
    done = ", ".join("%s %s%s" % (s["step"], "%.0f ms" % s["ms"], "" if s["ok"] else " FAIL")
                     for s in row["steps"] if s["ms"] is not None)
    now = row["outcome"] or row["phase"] or row["state"]
    return "%s -> %s: %s%s%s" % (row["vmID"], row["dst"], now,
                                 " (%s)" % row["step"] if row["step"] and not row["outcome"] else "",
                                 "; " + done if done else "")


def summary_lines(drain: dict) -> list:
    """The table: VM, destination, outcome, NIC-absent time; then the verdict and what is left."""
    rows = [("VM", "DESTINATION", "OUTCOME", "NIC-ABSENT")]
    for r in drain["vms"]:
        rows.append((r["vmID"], r["dst"], r["outcome"] or r["state"],
                     "%.0f ms" % r["nic_absent_ms"] if r["nic_absent_ms"] is not None else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for r in drain["vms"]:
        if r["outcome"] != "migrated" and r["error"]:
            lines.append("%s: %s" % (r["vmID"], r["error"]))
    if drain["state"] == "done":
        lines.append("sriov-client: drain done: %d VM(s) migrated" % len(drain["vms"]))
    else:
        lines.append("sriov-client: drain %s; VM(s) left on this host: %s"
                     % (drain["state"], ", ".join(drain["left"]) or "none"))
    return lines
