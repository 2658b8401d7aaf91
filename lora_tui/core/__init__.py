"""The headless core of lora_tui. Sub-packages, lowest first; each imports only those above it here
(``tests/test_import_layers.py`` fails on any cycle; the README's "Code map" has the same table):

- base modules ``units``, ``paths``, ``disk``, ``safe_read``: the standard library only.
- ``machine/``: GPUs (NVML), CPU and RAM (psutil), GPU links, installed kernel libraries, their import noise.
- ``model/``: the embedded default, the catalogue of shapes, hub ids and local paths.
- ``config``: the run configuration, presets, overrides, choice names, ``train_command``.
- ``data/``: read, detect, normalise, template, validate a dataset.
- ``plan/``: memory estimate and fixes, auto micro-batch, the one run plan, the device plan.
- ``run/``: a run directory, its events, claim, history, launcher, adapters, model card.
- ``chat/`` and ``export/``: talking to an adapter; adapter, merge, GGUF, Modelfile, zip, Hub push.
- ``train/``: the trainer process (transformers + peft + trl), engine step, resume, ranks, probe.
- ``bench/`` and ``trainer_main``: ``lora-tui bench``; the detached trainer's entry point.

Nothing under ``lora_tui.core`` may import ``textual``, ``lora_tui.ui``, ``lora_tui.commands`` or the
CLI; heavy libraries (torch, transformers, peft, trl) are imported inside the functions that need
them so that the wizard paints before they load.
"""
