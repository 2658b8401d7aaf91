"""Helpers shared by the test modules (no tests here: pytest collects only ``test_*.py``).

Test modules import helpers from this package or take fixtures from ``tests/conftest.py``,
never from another ``test_*.py``.
"""
