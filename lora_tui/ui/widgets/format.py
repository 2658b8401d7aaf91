"""Formatting helpers shared by the screens: sizes, counts, durations, verdicts."""

from __future__ import annotations

GIB = 1024 ** 3

VERDICT_STYLE = {"fits": ("✓ fits", "green"), "tight": ("! tight", "yellow"), "wont_fit": ("✗ won't fit", "red")}


def gib(n: float | int | None, digits: int = 1) -> str:
    if n is None:
        return "?"
    return f"{n / GIB:.{digits}f} GiB"


def count(n: int | float | None) -> str:
    """135M, 1.2B, 7.6K."""
    if n is None:
        return "?"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            value = n / size
            return f"{value:.0f}{suffix}" if value >= 100 else f"{value:.1f}{suffix}".replace(".0" + suffix, suffix)
    return f"{n:.0f}"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def verdict_markup(verdict: str | None) -> str:
    if verdict is None:
        return "[dim]?[/]"
    label, color = VERDICT_STYLE.get(verdict, (verdict, "white"))
    return f"[{color}]{label}[/]"


def number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def bar(fraction: float, width: int) -> str:
    """A text bar of ``width`` cells, filled to ``fraction`` (0..1)."""
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(round(fraction * width))
    return "█" * full + "░" * (width - full)
