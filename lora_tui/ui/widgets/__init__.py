"""Reusable widgets of the wizard (step bar, memory bars, loss plot, histogram, ...)."""
