"""Names that end up on disk: run names, keys and tar member names.

Keys and URL-derived names are untrusted; anything we write into a tar or a folder must stay inside
it. A safe name is one path component: no separators, no ``..``, no leading dot, no control
characters, not too long.
"""

from __future__ import annotations

import re

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}$")


class UnsafeNameError(ValueError):
    """A key, member or run name that could escape its folder."""


def is_safe_component(name: str) -> bool:
    return bool(_SAFE_COMPONENT.match(name)) and ".." not in name


def check_component(name: str, what: str) -> str:
    """Return ``name`` if it is one safe path component, else raise :class:`UnsafeNameError`."""
    if not isinstance(name, str) or not is_safe_component(name):
        raise UnsafeNameError(
            f"{what} {name!r} is not a safe file name: use letters, digits, '_', '-' and '.', "
            "no path separators, no '..', no leading dot"
        )
    return name


def member_name(key: str, extension: str) -> str:
    """The tar member ``<key>.<extension>``, refusing keys that could escape the archive."""
    check_component(key, "sample key")
    check_component(extension, "file extension")
    return f"{key}.{extension}"
