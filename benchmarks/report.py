"""One row shape for every benchmark, and the table they print.

Each bench module's ``measure()`` returns rows from :func:`row`, so
``run_all.py`` can put them in one table without knowing what they time.
"""

from __future__ import annotations

from typing import Optional

COLUMNS = ("benchmark", "measured", "baseline", "ratio", "target", "met?")


def row(name: str, ms: Optional[float], baseline: str, baseline_ms: Optional[float],
        target: str, ok: Optional[bool], note: str = "", ratio: Optional[float] = None) -> dict:
    """A result row; *ok* None means skipped (then *note* says why)."""
    if ratio is None and ms is not None and baseline_ms:
        ratio = ms / baseline_ms
    return {"name": name, "ms": ms, "baseline": baseline, "baseline_ms": baseline_ms,
            "ratio": ratio, "target": target, "ok": ok, "note": note}


def skipped(name: str, baseline: str, target: str, why: str) -> dict:
    return row(name, None, baseline, None, target, None, note="skipped: %s" % why)


def verdict(r: dict) -> str:
    if r["ok"] is None:
        return "skipped"
    return "yes" if r["ok"] else "MISSED"


def _ms(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return "%.2f ms" % value if value < 10 else "%.0f ms" % value


def cells(r: dict) -> tuple:
    """The row's table cells, in :data:`COLUMNS` order."""
    base = r["baseline"]
    if r["baseline_ms"] is not None:
        base = "%s: %s" % (base, _ms(r["baseline_ms"]))
    ratio = "-" if r["ratio"] is None else "%.2fx" % r["ratio"]
    return (r["name"], _ms(r["ms"]), base, ratio, r["target"], verdict(r))


def text_table(rows: list) -> str:
    """A plain aligned table, notes under it."""
    body = [COLUMNS] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["  * %s: %s" % (r["name"], r["note"]) for r in rows if r["note"]]
    return "\n".join(lines)


def _md(text: str) -> str:
    """Cell text that Markdown shows as written (no HTML tags, no column breaks)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")


def markdown_table(rows: list) -> str:
    def line(values):
        return "| %s |" % " | ".join(_md(v) for v in values)

    out = [line(COLUMNS), line(["---"] * len(COLUMNS))]
    out += [line(cells(r)) for r in rows]
    notes = ["- **%s**: %s" % (_md(r["name"]), _md(r["note"])) for r in rows if r["note"]]
    return "\n".join(out + ([""] + notes if notes else []))


def print_rows(rows: list) -> None:
    print(text_table(rows))
    missed = [r["name"] for r in rows if r["ok"] is False]
    if missed:
        print("MISSED: %s" % "; ".join(missed))
