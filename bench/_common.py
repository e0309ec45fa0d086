"""Helpers shared by the benchmark scripts (``bench/wire.py``, ``scale.py``, ``step.py``,
``memory.py``) and the reports: machine description, medians with their spread, result files,
matplotlib set up to write files.

Every benchmark writes one JSON document ``{"benchmark", "command", "machine", "started",
"finished", ..., "figures": [...]}`` to ``bench/results/<name>.json``; ``bench/report.py`` turns
the ``figures`` into ``BENCHMARKS.md``. A figure is::

    {"id", "label", "unit", "median", "min", "max", "runs": [...],
     "target": "<= 64" | ">= 1e7" | null, "met": true | false | null, "note": "..."}
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def machine() -> dict[str, Any]:
    """What the figures were measured on, including the load when measuring started."""
    cpu = cpu_model()
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info: dict[str, Any] = {
        "hostname_class": "project CI/dev machine",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "env": {
            k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ
        },
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        # The widest SIMD torch's CPU kernels use here (AVX2, AVX512, ...): the generator's
        # 64-bit integer products are native with AVX-512 and emulated without it.
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import grpc

        info["grpcio"] = grpc.__version__
    except ImportError:
        pass
    return info


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the raw runs of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "runs": vals,
    }


def met(value: float | None, target: str | None) -> bool | None:
    """Whether ``value`` satisfies ``target`` ("<= 64", ">= 1e7", ...); None without one."""
    if target is None or value is None:
        return None
    m = re.fullmatch(r"\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*", target)
    if m is None:
        raise ValueError(f"bad target {target!r}")
    return _OPS[m.group(1)](float(value), float(m.group(2)))


def figure(
    id: str,
    label: str,
    unit: str,
    values: Sequence[float],
    *,
    target: str | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One reported figure: the median of ``values`` with its spread, against ``target``."""
    s = summary(values)
    return {
        "id": id,
        "label": label,
        "unit": unit,
        **s,
        "target": target,
        "met": met(s["median"], target),
        "note": note,
    }


def command_line() -> str:
    """The command that produced the result (relative to the repository root)."""
    argv = list(sys.argv)
    with contextlib.suppress(ValueError):
        argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
    return "python " + " ".join(shlex.quote(a) for a in argv)


def write_result(name: str, doc: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``doc`` as ``<out or bench/results>/<name>.json`` and return the path."""
    folder = Path(out) if out is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    doc = {"benchmark": name, **doc}
    doc.setdefault("finished", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    doc.setdefault("loadavg_at_end", [round(x, 2) for x in os.getloadavg()])
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return path


def started() -> str:
    """Now, as the ``started`` field."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: plots are written to files, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
