"""Names and key formats that several layers share.

A cross's key joins its parts with "|" ("3|17"), as DESIGN.md publishes it. A part that itself
holds "|" or "\\" has them escaped with "\\" ("Sat\\|Sun|12" is the parts "Sat|Sun" and "12"), so
every key maps back to exactly one tuple of parts; the transform hashes the same escaped form, so
("Sat|Sun", "12") and ("Sat", "Sun|12") land in different buckets. Parts without either
character (all usual data) are unchanged.
"""
from __future__ import annotations

CROSS_SEPARATOR = "|"
ESCAPE = "\\"
LABEL_VOCABULARY = "__label__"
QUERY_SIGNATURE = "query_embedding"
CANDIDATE_SIGNATURE = "candidate_embedding"


def signature_name(feature: str) -> str:
    """The SavedModel signature computing one feature's embedding."""
    return f"embed_{feature}"


def escape_part(part: str) -> str:
    return part.replace(ESCAPE, ESCAPE * 2).replace(CROSS_SEPARATOR, ESCAPE + CROSS_SEPARATOR)


def join_parts(parts: list[str] | tuple[str, ...]) -> str:
    """The key of a cross's parts: ("3", "17") -> "3|17"."""
    return CROSS_SEPARATOR.join(escape_part(part) for part in parts)


def split_key(key: str) -> list[str]:
    """The parts of a cross key, escapes undone: "Sat\\|Sun|12" -> ["Sat|Sun", "12"]."""
    parts, current, escaped = [], [], False
    for character in key:
        if escaped:
            current.append(character)
            escaped = False
        elif character == ESCAPE:
            escaped = True
        elif character == CROSS_SEPARATOR:
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    parts.append("".join(current))
    return parts
