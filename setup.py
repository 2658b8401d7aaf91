"""Build hook: ship sample_data/ inside the package as lora_tui/sample_data/.

The config's default data paths (sample_data/train.jsonl, sample_data/valid.jsonl)
must work from a wheel install too, where the checkout is gone; the data stays at the
top of the repository for people reading it, and core/paths.py looks in both places.
Everything else about the build is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithSampleData(build_py):
    def run(self):
        super().run()
        source = HERE / "sample_data"
        # An editable install reads the checkout's sample_data/ directly.
        if getattr(self, "editable_mode", False) or not source.is_dir():
            return
        target = Path(self.build_lib) / "lora_tui" / "sample_data"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithSampleData})
