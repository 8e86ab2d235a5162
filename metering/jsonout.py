"""JSON output with Decimal numbers written exactly (no float conversion anywhere)."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal

_MARK = "\u0000dec:"
_MARK_RE = re.compile(r'"\\u0000dec:(-?[0-9]+(?:\.[0-9]+)?)"')


def _convert(obj):
    if isinstance(obj, Decimal):
        return _MARK + format(obj, "f")
    if isinstance(obj, dict):
        return {k: _convert(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_convert(v) for v in obj]
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    return obj


def dumps(obj, indent: int | None = 2) -> str:
    """Serialize, writing Decimals as exact JSON numbers (Decimal('2984.40') -> 2984.40)."""
    return _MARK_RE.sub(r"\1", json.dumps(_convert(obj), indent=indent))
