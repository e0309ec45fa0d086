"""The pieces every section of ``BENCHMARKS.md`` is made of: numbers formatted for a table, the
table of a result document's measured figures beside their targets, the command and machine a
document was measured with, and the plots a section embeds."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def fmt(value: float | None, unit: str = "") -> str:
    """A number for a table: 3 significant digits, thousands separators, 10^k for big ratios."""
    if value is None:
        return "–"
    v = float(value)
    if v != v:  # NaN: not measured
        return "–"
    if unit == "×" and abs(v) >= 1e5:
        exp = len(str(int(abs(v)))) - 1
        return f"{v / 10**exp:.2f}×10<sup>{exp}</sup>"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if v == 0 or abs(v) >= 0.01:
        return f"{v:.2f}"
    return f"{v:.2e}"


def spread(fig: dict[str, Any]) -> str:
    runs = fig.get("runs") or []
    if len(runs) <= 1:
        return "1 run" if runs else "–"
    return f"{fmt(fig['min'], fig['unit'])} – {fmt(fig['max'], fig['unit'])} ({len(runs)} runs)"


def met(fig: dict[str, Any]) -> str:
    if fig.get("target") is None:
        return ""
    return "**met**" if fig.get("met") else "**not met**"


def target_text(fig: dict[str, Any]) -> str:
    """``<= 64`` → ``≤ 64 B``."""
    target = fig.get("target")
    if not target:
        return ""
    op, _, value = target.partition(" ")
    op = {"<=": "≤", ">=": "≥"}.get(op, op)
    number = float(value)
    shown = fmt(number, fig["unit"]) if number >= 1e5 else value
    suffix = unit_suffix(fig["unit"]) if fig["unit"] != "×" else "" if "<sup>" in shown else "×"
    return f"{op} {shown}{suffix}"


def unit_suffix(unit: str) -> str:
    return "" if unit in ("", "×") else f" {unit}"


def figure_table(figs: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| figure | median | spread (min – max) | target | met |", "|---|---|---|---|---|"]
    for f in figs:
        unit = f["unit"]
        median = fmt(f["median"], unit)
        median += ("" if "<sup>" in median else "×") if unit == "×" else unit_suffix(unit)
        label = f["label"] + (f"<br><sub>{f['note']}</sub>" if f.get("note") else "")
        label = label.replace("|", "\\|")  # a bare | would end the table cell
        lines.append(f"| {label} | {median} | {spread(f)} | {target_text(f)} | {met(f)} |")
    return lines


def machine_line(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    env = m.get("env") or {}
    if env:
        gpu += "; environment " + ", ".join(f"`{k}={v}`" for k, v in sorted(env.items()))
    simd = f" ({m['cpu_capability']})" if m.get("cpu_capability") else ""
    return (
        f"{m.get('cpu', '?')}{simd}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB"
        f"{gpu}; Python {m.get('python', '?')}, torch {m.get('torch', '?')}, grpcio "
        f"{m.get('grpcio', '?')}. Load average (1, 5, 15 min) at start "
        f"{m.get('loadavg_at_start')}, at end {doc.get('loadavg_at_end')}; "
        f"run {doc.get('started', '?')} → {doc.get('finished', '?')}."
    )


def header(doc: dict[str, Any]) -> list[str]:
    return [
        f"Command: `{doc.get('command', '?')}`  ",
        f"Machine: {machine_line(doc)}",
        "",
    ]


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    return dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class Images:
    """Where the plots are written (``folder``) and where the document that links them lies
    (``doc_dir``), so that a link is the plot's path relative to the document."""

    folder: Path
    doc_dir: Path

    def embed(self, name: str, alt: str, draw: Callable[[Path], None]) -> list[str]:
        """Draw ``folder/name`` with ``draw(path)``; the Markdown lines that show it."""
        png = self.folder / name
        draw(png)
        return [f"![{alt}]({Path(os.path.relpath(png, self.doc_dir)).as_posix()})", ""]
