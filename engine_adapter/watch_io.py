"""The watcher's edges: the engine's events collection, the state file, the metrics.

Events (``EventsService.list`` in ovirt-engine-api-model; served by
``BackendEventsResource`` through ``AbstractBackendCollectionResource``):
``from`` is exclusive (``SyntaxChecker``: ``audit_log_id > from``), the
answer is newest first (``SearchObjectAutoCompleter``: ``audit_log_id
DESC``) and ``max`` cuts it, so a burst larger than one page is read page by
page with the search's ``page N`` (OFFSET (N-1)*max). An event logged
between two pages pushes the older ones down: pages overlap, they never
skip, and duplicates go by id.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime
from typing import Optional

from .errors import AdapterError
from .watch_model import Event

log = logging.getLogger("sriov-engine")

STATE_VERSION = 1


def _id(obj) -> Optional[str]:
    return obj.id if obj is not None else None


def to_event(sdk_event) -> Event:
    """An SDK ``types.Event`` as the model's; ValueError when it is malformed."""
    try:
        ev_id, code = int(sdk_event.id), int(sdk_event.code)
    except (TypeError, ValueError):
        raise ValueError("event with id %r and code %r" % (sdk_event.id, sdk_event.code)) from None
    when = sdk_event.time
    return Event(
        id=ev_id, code=code,
        time=when.timestamp() if isinstance(when, datetime) else None,
        correlation_id=sdk_event.correlation_id or None,
        vm_id=_id(sdk_event.vm), host_id=_id(sdk_event.host),
        description=sdk_event.description or "",
    )


def read_events(engine, after: int, page_size: int, max_pages: int = 1000) -> list:
    """Every event with an id above *after*, oldest first, however many pages it takes."""
    service = engine._system.events_service()
    seen = {}
    for page in range(1, max_pages + 1):
        kwargs = {"from_": after, "max": page_size}
        if page > 1:
            kwargs["search"] = "page %d" % page
        try:
            found = engine._call("list events after %d" % after, service.list, **kwargs)
        except ValueError as e:  # the SDK's reader met a value it cannot parse
            raise AdapterError("engine sent events the SDK cannot read (page %d after event %d): "
                               "%s" % (page, after, e)) from None
        for raw in found:
            try:
                ev = to_event(raw)
            except ValueError as e:
                log.warning("skipping a malformed event: %s", e)
                continue
            seen[ev.id] = ev
        if len(found) < page_size:
            break
    return sorted(seen.values(), key=lambda e: e.id)


def newest_event_id(engine) -> int:
    """Where a watcher with no state starts: the newest event now (0 if none)."""
    service = engine._system.events_service()
    found = engine._call("read the newest event", service.list, max=1)
    ids = []
    for raw in found:
        try:
            ids.append(to_event(raw).id)
        except ValueError:
            continue
    return max(ids, default=0)


class StateFile:
    """The last event id and the open migrations, written atomically (tmp + rename)."""

    def __init__(self, path: str):
        self.path = path

    def load(self) -> Optional[dict]:
        """The saved state, or None (no file, or a corrupt one: said in one line)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("state file %s unreadable (%s); starting from the newest event",
                      self.path, getattr(e, "strerror", None) or e)
            return None
        if not _valid_state(data):
            log.error("state file %s is not a watcher state; starting from the newest event",
                      self.path)
            return None
        return data

    def save(self, last_id: int, migrations: dict) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        body = json.dumps({"version": STATE_VERSION, "last_id": last_id,
                           "migrations": migrations}, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".watch-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _valid_state(data) -> bool:
    return (isinstance(data, dict) and data.get("version") == STATE_VERSION
            and isinstance(data.get("last_id"), int) and isinstance(data.get("migrations"), dict))


class WatchMetrics:
    """Counters for Prometheus, in the watcher's own registry."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("sriov_watch_events", "Engine events read", registry=self.registry)
        self.triggers = Counter("sriov_watch_triggers", "Migrations that left vNICs unplugged, by "
                                "the event code that said so", ["code"], registry=self.registry)
        self.plugs = Counter("sriov_watch_plugs", "vNIC plugs by outcome", ["outcome"],
                             registry=self.registry)
        self.skipped = Counter("sriov_watch_skipped", "Migrations the watcher let go, by reason",
                               ["reason"], registry=self.registry)
        self.errors = Counter("sriov_watch_engine_errors", "Passes that failed to reach the engine",
                              registry=self.registry)
        self.gaps = Counter("sriov_watch_event_gaps", "Gaps in event ids", registry=self.registry)
        self.nic_back = Histogram("sriov_watch_nic_back_seconds", "From the failure event to the "
                                  "vNIC plugged again", buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900),
                                  registry=self.registry)
        self.pending = Gauge("sriov_watch_pending", "Migrations with vNICs to plug back",
                             registry=self.registry)


def start_metrics(metrics: WatchMetrics, address: str, port: int):
    """``/metrics`` over plain HTTP, as the host service serves it."""
    from jsonrpc_plugin.metrics import MetricsServer

    try:
        return MetricsServer(metrics, address, port).start()
    except OSError as e:
        raise AdapterError("cannot serve metrics on %s:%d: %s" % (address, port, e.strerror)) from None
