"""VDSM's error codes, messages and defaults, as the stand-in answers them.

Copied from oVirt/vdsm ``lib/vdsm/common/define.py`` (``errCode``),
``lib/vdsm/common/exception.py`` and ``lib/vdsm/common/config.py.in``
(``[vars]``); the migration parameters from ``lib/vdsm/api/vdsm-api.yml``
(``MigrateParams``). Pure data, so every module of the stand-in can use it.
"""

from __future__ import annotations

from typing import Optional

# VDSM's error codes (lib/vdsm/common/exception.py, define.errCode)
DONE = 0
NO_VM = 1  # noVM
VM_EXISTS = 4  # exist (clientIF.createVm: the VM id is still in the container)
MIGRATE_ERR = 12  # migrateErr
MIG_CANCEL_ERR = 47  # migCancelErr
MIG_IN_PROGRESS = 51  # migInProgress
HOOK_ERROR = 78  # hookError
MESSAGES = {NO_VM: "Virtual machine does not exist", VM_EXISTS: "Virtual machine already exists",
            MIGRATE_ERR: "Fatal error during migration",
            MIG_CANCEL_ERR: "Migration not in progress",
            MIG_IN_PROGRESS: "Command not supported during migration", HOOK_ERROR: "Hook error"}
MIGRATE_LIMIT = 82  # migrateLimit: the destination is at its incoming limit (vm.py _startUnderlyingVm)
MESSAGES[MIGRATE_LIMIT] = "Incoming migration limit exceeded"
IN_PROGRESS_MSG = "Migration in progress"
DONE_MSG = "Migration done"
CREATE = "migrationCreate"
MIGRATE = "migrate"

# VDSM's [vars] defaults (lib/vdsm/common/config.py.in)
MIGRATION_MAX_BANDWIDTH = 52  # MiB/s, for a VM.migrate without maxBandwidth
MAX_INCOMING_MIGRATIONS = 2  # migration.incomingMigrations' bound, until an incomingLimit sets it
MIGRATION_RETRY_TIMEOUT = 10.0  # s between attempts at a destination at its limit
# VDSM's MigrateParams (lib/vdsm/api/vdsm-api.yml), the legacy downtime and the engine's src
MIGRATE_PARAMS = frozenset((
    "vmId", "dst", "dstparams", "mode", "method", "tunneled", "dstqemu", "abortOnError",
    "consoleAddress", "compressed", "autoConverge", "encrypted", "cpusets", "parallel",
    "numaNodesets", "zerocopy", "maxBandwidth", "incomingLimit", "outgoingLimit",
    "convergenceSchedule", "enableGuestEvents", "downtime", "src"))


class VdsmError(Exception):
    """A VDSM error response: numeric code, message, and where it stopped."""

    def __init__(self, code: int, detail: str = "", stage: Optional[str] = None,
                 message: Optional[str] = None):
        if message is None:
            base = MESSAGES.get(code, "Error")
            message = "%s: %s" % (base, detail) if detail else base
        super().__init__(message)
        self.code = code
        self.message = message
        self.stage = stage

    def response(self) -> dict:
        return {"status": {"code": self.code, "message": self.message}}
