"""What the one-shot client tools (``cyber0-evaluate``, ``cyber0-export``) share."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping

from cyber0.common.data import DataUnavailableError
from cyber0.common.hf import ModelUnavailableError

#: Errors that mean "this input cannot be used", reported as exit 2; anything else is a bug.
USAGE_ERRORS = (ValueError, OSError, DataUnavailableError, ModelUnavailableError)


def run_tool(prog: str, work: Callable[[], Mapping[str, object]]) -> int:
    """Print ``work()``'s result as one JSON line and return 0, or print ``prog: reason`` on
    stderr and return 2 when it raises one of :data:`USAGE_ERRORS`."""
    try:
        result = work()
    except USAGE_ERRORS as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(dict(result)), flush=True)
    return 0
