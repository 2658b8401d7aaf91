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


class ExportBackend(FixedBackend):
    """FixedBackend with canned GGUF exports for the Export screen's scenes and Pilot tests: no model is merged,
    written or run here (tests/test_export_gain.py and tests/test_export_gguf*.py do that for real). Sizes are
    the embedded model's estimates (core/export/sizes.py: SmolLM2-135M, the sample run's adapter); the check
    says the file keeps 96 % of a 1 nat/token gain and moves KL 0.03, what a q4_k_m normally does."""

    MIB = 2 ** 20
    SIZES = {"f16": 258.3, "q8_0": 138.1, "q6_k": 132.0, "q5_k_m": 102.3, "q4_k_m": 100.6, "q4_0": 87.5,
             "gguf_adapter": 9.3}
    BASE_FILE = Path("~/.cache/lora_tui/gguf-bases/SmolLM2-135M-Instruct-f16.gguf")

    def __init__(self, out: Path | None = None, gpu: bool = True) -> None:
        super().__init__(gpu)
        self.out = Path(out) if out else Path("runs/capn-lora-demo")
        self.written: list[tuple[str, str | None, bool]] = []  # (format, option, overwrite) of each write

    def export_sizes(self, run) -> dict:
        return {name: int(mib * self.MIB) for name, mib in self.SIZES.items()}

    def write_export(self, run, name, option=None, overwrite=False, on_progress=None):
        from types import SimpleNamespace

        self.written.append((name, option, overwrite))
        folder = self.out / "gguf"
        if name == "gguf_adapter":  # gguf_adapter.write_adapter_gguf's info: the LoRA file on its shared base file
            return SimpleNamespace(path=folder / "capn-lora-demo-lora.gguf", base_path=self.BASE_FILE,
                                   modelfile=folder / "Modelfile-lora")
        return folder / f"capn-lora-demo-{option}.gguf"

    def verify_export(self, run, artefact, gguf_file=None, on_progress=None, lora=None):
        from lora_tui.core.export.check import AnswerPair, RoundTrip
        from lora_tui.core.export.gain import judge

        gguf_type = self.written[-1][1] or "f16" if self.written else "f16"
        rows = [[-3.0, -2.0, -1.0]] * 8  # the fine-tune's gain is 1 nat/token; the file keeps 96 % of it
        judgement = judge(rows, [[r + 1.0 for r in row] for row in rows], [[r + 0.96 for r in row] for row in rows],
                          [[0.03] * 3] * 8, [[True, True, False]] * 8, gguf_type=gguf_type)
        answer = "Ahoy! A map scale tells you how far one step on paper goes on the ground. — Cap'n LoRA"
        return RoundTrip(str(lora or artefact), "gguf", [AnswerPair("How do I read a map scale?", answer, answer,
                                                                    reference_ids=[1], artefact_ids=[1])],
                         -1.0, -1.04, 24, 0.667, True, "", True, "<|im_end|>", ["<|im_end|>"],
                         runtime="llama.cpp, xllamacpp (canned)", gguf_type=gguf_type, judgement=judgement)
