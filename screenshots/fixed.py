"""Deterministic stand-ins for the snapshot tests and the screenshots.

Snapshots must look the same on every machine, so what depends on the machine or
on sampling is fixed here: the hardware report (one 24 GiB GPU, whatever this box
has), the chat model (canned, streamed answers), and the export summary (relative
paths). Everything else — catalogue, memory estimates, dataset validation with the
embedded tokenizer, config fields, run events — is the real core.
"""

from __future__ import annotations

from pathlib import Path

from lora_tui.ui.backend import Backend
from screenshots import REPO, SCENE_FILES

DEMO_RUN = REPO / SCENE_FILES / "runs" / "capn-lora-demo"
DATA = REPO / SCENE_FILES / "data"
GIB = 1024 ** 3


def fixed_hardware(gpu: bool = True):
    from lora_tui.core.machine.hardware import GPUInfo, HardwareReport

    gpus = [GPUInfo(index=0, name="NVIDIA GeForce RTX 4090", memory_total=24 * GIB, memory_free=int(22.6 * GIB),
                    memory_used=int(1.4 * GIB), utilization=3, temperature=41, power_draw=28.0, power_limit=450.0,
                    compute_capability=(8, 9), bf16=True)] if gpu else []
    return HardwareReport(gpus=gpus, cpu_count=16, ram_total=int(62.7 * GIB), ram_available=int(51.5 * GIB),
                          torch_version="2.13.0", cuda_version="12.4" if gpu else None,
                          bitsandbytes_version="0.50.2", bitsandbytes_ok=True,
                          driver_version="550.54.14" if gpu else None,
                          nvml_error=None if gpu else "the NVIDIA driver is not loaded")


ADAPTER_ANSWER = ("Ahoy! Measure the distance on the map with a ruler, then multiply it by the scale to get "
                  "the real distance. — Cap'n LoRA")
BASE_ANSWER = ("To read a map scale, compare a distance on the map with the scale bar and convert it to the "
               "real-world distance.")


class FakeSource:
    adapter_dir = Path("runs/capn-lora-demo/adapter")
    base_model = "embedded:SmolLM2-135M-Instruct"
    note = ""


class FakeChatSession:
    """Streams canned answers word by word, like ChatSession.stream does token by token."""

    has_adapter = True
    device = "cuda"
    source = FakeSource()

    def stream(self, messages, *, use_adapter=True, adapter=None, settings=None, should_stop=None, prompt_format=None):
        answer = ADAPTER_ANSWER if use_adapter and adapter != "base" else BASE_ANSWER
        for word in answer.split(" "):
            yield word + " "


class FixedBackend(Backend):
    def __init__(self, gpu: bool = True) -> None:
        super().__init__()
        self.gpu = gpu

    def probe_hardware(self, check_libraries: bool = True):
        return fixed_hardware(self.gpu)

    def open_chat(self, run, on_progress=None):
        return FakeChatSession()

    def chat_runs(self, session, folder: str) -> list:
        return []  # the canned session has no base to match runs against

    def active_runs(self, runs_dir: str) -> list:
        # A developer's own runs/ folder must not put a notice into the snapshots.
        return [] if runs_dir == "runs" else super().active_runs(runs_dir)

    def export_summary(self, run) -> dict:
        return {"run": "runs/capn-lora-demo", "name": "capn-lora-demo", "state": "finished",
                "base_model": "embedded:SmolLM2-135M-Instruct", "adapter": "runs/capn-lora-demo/adapter",
                "adapter_bytes": 19_712_344, "adapter_files": ["README.md", "adapter_config.json",
                                                               "adapter_model.safetensors", "chat_template.jinja",
                                                               "tokenizer.json", "tokenizer_config.json"],
                "model_card": str(Path(run.path) / "adapter" / "README.md"), "zip": None, "zip_bytes": 0,
                "merged": []}


def snapshot_state(**config_changes):
    """A wizard state on the embedded model and the small snapshot dataset."""
    from lora_tui.core.config import Config
    from lora_tui.ui.state import WizardState

    config = Config()
    config.data.train = f"{SCENE_FILES}/data/train.jsonl"
    config.data.validation = None
    config.data.val_fraction = 0.1
    config.data.max_seq_len = 96
    for dotted, value in config_changes.items():
        section, key = dotted.split("__")
        setattr(getattr(config, section), key, value)
    return WizardState(config=config)
