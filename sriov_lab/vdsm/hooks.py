"""A VDSM-compatible hook runner for the lab.

It runs a hooks directory the way VDSM's ``hooks._runHooksDir`` does:
executables of ``DIR/<point>/`` in sorted name order; the domain XML in a
temp file named by ``$_hook_domxml``; ``vmId`` and the custom properties
in the environment; stdout dropped; stderr kept as log lines. rc 2 stops
the remaining scripts of the point; any non-zero rc fails a ``before_*``
point (the action aborts) and is only logged for ``after_*`` points.

Each run returns every script's rc, stderr and monotonic timings. The
migration order that calls it (VDSM's, exactly) lives in
:mod:`sriov_lab.vdsm.migration` and :mod:`sriov_lab.vdsm.api`.

Given a *user* (:class:`sriov_lab.vdsm_user.LabUser`), each script runs
as VDSM runs it: as ``vdsm``, group ``kvm``, with no capabilities, on a
domxml file that user owns; without one, as the current user. Unlike
VDSM (no timeout) the lab has a generous timeout, so a hung hook fails a
test instead of hanging CI.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger(__name__)

BEFORE_SOURCE = "before_vm_migrate_source"
BEFORE_DEST = "before_vm_migrate_destination"
AFTER_DEST = "after_vm_migrate_destination"
AFTER_SOURCE = "after_vm_migrate_source"
AFTER_DESTROY = "after_vm_destroy"
POINTS = (BEFORE_SOURCE, BEFORE_DEST, AFTER_DEST, AFTER_SOURCE, AFTER_DESTROY)
ERR_STOP = 2  # VDSM: this rc stops the remaining scripts of the point


@dataclass
class ScriptRun:
    script: str
    rc: int
    stderr: list
    start: float
    end: float

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0


@dataclass
class PointRun:
    """One hook point on one host: all its scripts and the verdict."""

    host: str
    point: str
    scripts: list = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0

    @property
    def rc(self) -> int:
        """The first non-zero script rc, as VDSM would report it; 0 if none."""
        return next((s.rc for s in self.scripts if s.rc != 0), 0)

    @property
    def failed(self) -> bool:
        """True when this point would abort VDSM's action (before_* only)."""
        return self.point.startswith("before_") and self.rc != 0

    @property
    def stderr(self) -> list:
        return [line for s in self.scripts for line in s.stderr]

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0


class HookRunner:
    """Runs the hooks of one lab host, with that host's own environment."""

    def __init__(self, hooks_dir: str, env: Optional[dict] = None, host: str = "host",
                 timeout: float = 120.0, user=None):
        self.hooks_dir = hooks_dir
        self.env = dict(env or {})
        self.host = host
        self.timeout = timeout
        self.user = user  # a vdsm_user.LabUser, or None: the current user

    def scripts(self, point: str) -> list:
        """Executables of the point, in VDSM's order (sorted by name)."""
        d = os.path.join(self.hooks_dir, point)
        if not os.path.isdir(d):
            return []
        paths = (os.path.join(d, n) for n in sorted(os.listdir(d)))
        return [p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)]

    def run(self, point: str, domxml: str, vm_id: str, custom: Optional[dict] = None) -> PointRun:
        result = PointRun(self.host, point, start=time.monotonic())
        scripts = self.scripts(point)
        if scripts:
            with tempfile.NamedTemporaryFile("w", prefix="hook_", suffix=".xml",
                                             encoding="utf-8", delete=False) as f:
                f.write(domxml)
            try:
                if self.user:  # VDSM writes it as vdsm, and its hooks rewrite it
                    self.user.give(f.name, 0o600)
                env = self._environ(f.name, vm_id, custom)
                for script in scripts:
                    run = self._run_script(script, env)
                    result.scripts.append(run)
                    if run.rc == ERR_STOP:
                        break
            finally:
                os.unlink(f.name)
        result.end = time.monotonic()
        self._log(result)
        return result

    def _environ(self, domxml_path: str, vm_id: str, custom: Optional[dict]) -> dict:
        env = dict(os.environ)
        env.update(self.env)
        env.update({k: str(v) for k, v in (custom or {}).items()})
        env["vmId"] = vm_id
        env["_hook_domxml"] = domxml_path
        return self.user.environ(env) if self.user else env

    def _run_script(self, script: str, env: dict) -> ScriptRun:
        start = time.monotonic()
        try:
            argv = self.user.hook_argv([script]) if self.user else [script]
            proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=self.timeout, check=False)
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = ERR_STOP, (e.stderr or b"") + b"\nlab hook runner: timed out"
        except OSError as e:
            rc, err = ERR_STOP, ("lab hook runner: cannot run: %s" % e).encode()
        lines = err.decode("utf-8", errors="replace").splitlines()
        return ScriptRun(script, rc, lines, start, time.monotonic())

    def _log(self, result: PointRun) -> None:
        for s in result.scripts:
            for line in s.stderr:
                log.info("%s %s %s: %s", self.host, result.point, os.path.basename(s.script), line)
            if s.rc:
                log.warning("%s %s %s: rc %d", self.host, result.point,
                            os.path.basename(s.script), s.rc)
