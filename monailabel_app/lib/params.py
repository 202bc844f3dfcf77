"""Request and config values that arrive as JSON or as form strings."""

from __future__ import annotations

from typing import Any


def parse_bool(what: str, value: Any) -> bool:
    """JSON true/false, 0/1, or the strings a form sends ("true", "false", "1", "0", "yes", "no");
    anything else is a ValueError naming ``what``."""
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "false", "1", "0", "yes", "no"):
        return text in ("true", "1", "yes")
    raise ValueError(f"{what} must be true or false, got {value!r}")
