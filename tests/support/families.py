"""The family matrix's steps for the tests: benchmarks/family_matrix.py loaded as a module (the benchmark prints
the whole table; tests/test_families.py asserts it per family). The tiny models themselves are built by
lora_tui/core/model/tiny.py (the ``tiny_family`` fixture in conftest.py)."""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


@lru_cache(maxsize=1)
def matrix():
    """benchmarks/family_matrix.py as a module: ``prepare``, ``run_step``, ``STEPS``, the ``step_*`` functions."""
    spec = importlib.util.spec_from_file_location("family_matrix", REPO / "benchmarks" / "family_matrix.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["family_matrix"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
