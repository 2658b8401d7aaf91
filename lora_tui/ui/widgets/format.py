"""Formatting helpers shared by the screens: counts, verdicts, bars; sizes and durations come from
core.units (the same words as the CLI)."""

from __future__ import annotations

from lora_tui.core.units import GiB as GIB, gib, human_duration as duration, human_size  # noqa: F401  (one formatter each, shared with the CLI)

VERDICT_STYLE = {"fits": ("✓ fits", "green"), "tight": ("! tight", "yellow"), "wont_fit": ("✗ won't fit", "red")}


def count(n: int | float | None) -> str:
    """135M, 1.2B, 7.6K."""
    if n is None:
        return "?"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            value = n / size
            return f"{value:.0f}{suffix}" if value >= 100 else f"{value:.1f}{suffix}".replace(".0" + suffix, suffix)
    return f"{n:.0f}"


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
