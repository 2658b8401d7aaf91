"""Sizes and durations as people read them, the same in the CLI and the wizard.

Binary units throughout (KiB, MiB, GiB, TiB: powers of 1024), because that is how
RAM, GPU memory (NVML, torch) and `du -h` count; a file size and a memory figure
must not read differently for the same bytes.

Must not: import anything beyond the standard library, or print.
"""

from __future__ import annotations

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4
_UNITS = (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB))
UNKNOWN = "?"


def human_size(n: int | float | None, digits: int = 1) -> str:
    """512 B, 18.8 MiB, 1.9 GiB: the largest binary unit the value reaches, ``digits`` decimals."""
    if n is None:
        return UNKNOWN
    for unit, size in _UNITS:
        if abs(n) >= size:
            return f"{n / size:.{digits}f} {unit}"
    return f"{n:.0f} B"


def gib(n: int | float | None, digits: int = 1) -> str:
    """Always in GiB: for columns of memory figures that are compared with each other."""
    if n is None:
        return UNKNOWN
    return f"{n / GiB:.{digits}f} GiB"


def human_duration(seconds: float | None) -> str:
    """45s, 3m05s, 2h07m; '?' when unknown (no ETA yet)."""
    if seconds is None or seconds < 0:
        return UNKNOWN
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"
