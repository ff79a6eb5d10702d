"""The one place that knows how label names are spelled; the class order itself lives in config.json."""

from __future__ import annotations

# Canonical classes, in the order new models use. A loaded model always takes its order
# from its own config.json, never from here.
DEFAULT_LABELS: tuple[str, ...] = ("female", "male")

# Numeric codes (0/1, -1/1) are deliberately absent: their meaning differs between datasets.
_ALIASES = {
    "male": "male", "man": "male", "men": "male", "m": "male", "boy": "male",
    "female": "female", "woman": "female", "women": "female", "f": "female", "girl": "female",
}


def normalize_label(name: str) -> str | None:
    """Map a folder name or CSV value to 'male'/'female' (case-insensitive); None if unknown."""
    return _ALIASES.get(str(name).strip().lower())


def is_alias(name: str) -> bool:
    """True when a name is accepted but is not the canonical spelling (reported to the user)."""
    canon = normalize_label(name)
    return canon is not None and str(name).strip().lower() != canon
