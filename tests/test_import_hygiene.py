"""lora_tui.core must never pull in the UI: each core module is imported in a
fresh interpreter and textual must be absent from sys.modules afterwards."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import lora_tui.core


def _core_modules() -> list[str]:
    names = ["lora_tui.core"]
    for info in pkgutil.walk_packages(lora_tui.core.__path__, prefix="lora_tui.core."):
        names.append(info.name)
    return names


@pytest.mark.parametrize("module", _core_modules())
def test_core_module_imports_without_textual(module):
    code = (
        "import sys, importlib; importlib.import_module(%r); "
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.') or m.startswith('lora_tui.ui')]; "
        "print(bad); sys.exit(1 if bad else 0)" % module
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"{module} imported UI modules: {result.stdout} {result.stderr[-2000:]}"


def test_cli_help_does_not_import_torch():
    """`lora-tui --help` and the wizard's start must not wait for torch."""
    code = (
        "import sys; from lora_tui import cli; cli.build_parser(); "
        "import lora_tui.ui.app; print('torch' in sys.modules); sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
