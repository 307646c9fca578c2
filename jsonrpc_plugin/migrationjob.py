"""One ``SRIOV.migrate`` as ``migrationStatus`` shows it: its phase and its timed steps.

Apart from the driver that fills it in (:mod:`.migrationdriver`) because
the drain (:mod:`.evacuate`) and the metrics read it too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Step:
    name: str
    start: float
    end: Optional[float] = None
    ok: Optional[bool] = None
    detail: str = ""

    def to_json(self) -> dict:
        ms = None if self.end is None else round((self.end - self.start) * 1000.0, 1)
        return {"step": self.name, "start": round(self.start, 3), "ms": ms, "ok": self.ok,
                "detail": self.detail}


@dataclass
class MigrationJob:
    """One ``SRIOV.migrate``, as ``migrationStatus`` shows it."""

    vm_id: str
    dst: str
    port: int
    phase: str = "started"
    error: Optional[str] = None
    steps: list = field(default_factory=list)
    vnics: list = field(default_factory=list)  # the destination's view at the end
    started: float = field(default_factory=time.time)
    ended: Optional[float] = None
    progress: Optional[int] = None  # VDSM's, in %, while it migrates
    stall_timeout: Optional[float] = None  # cancelled when nothing moved for this long

    @property
    def done(self) -> bool:
        """Ended: every step ran, the destination's reservation released included.

        The phase turns final a moment before that release; a caller who
        saw "done" then would find a reservation still on the destination.
        """
        return self.ended is not None

    def begin(self, name: str, phase: str) -> Step:
        self.phase = phase
        step = Step(name, time.time())
        self.steps.append(step)
        return step

    def to_json(self) -> dict:
        return {"vmID": self.vm_id, "dst": self.dst, "port": self.port, "phase": self.phase,
                "done": self.done, "error": self.error, "started": round(self.started, 3),
                "ended": None if self.ended is None else round(self.ended, 3),
                "progress": self.progress, "stall_timeout": self.stall_timeout,
                "steps": [s.to_json() for s in self.steps], "vnics": self.vnics}


def finish(step: Step, ok: bool, detail: str = "") -> None:
    step.end, step.ok, step.detail = time.time(), ok, detail
