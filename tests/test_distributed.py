"""The pure parts of multi-device training: devices/strategy settings, the plan, the accelerate
config and launch line, the per-GPU memory figures, torchrun failure summaries, and the GPU
topology read from a FAKE NVML module (no GPU here). Real two-rank runs: test_distributed_run.py.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from lora_tui.core.train import distributed as d
from lora_tui.core.config import (Config, ConfigError, DistributedError, apply_overrides, check_value, config_to_yaml,
                                  load_config)
from lora_tui.core.train.distributed_run import rank_failure
from lora_tui.core.machine.gpu_topology import topology_lines
from lora_tui.core.plan import devices
from lora_tui.core.plan.devices import strategy_line
from tests.support.nvml import A100, FakeNVML, GiB


@pytest.mark.parametrize("typed, stored", [("auto", "auto"), ("4", "4"), (4, "4"), ("0,2", "0,2"), ("[1, 3]", "1,3"),
                                           ([1], "1,"), ("1,", "1,"), ("all", "auto")])
def test_devices_setting_is_normalised(typed, stored):
    assert check_value("training", "devices", typed) == stored


@pytest.mark.parametrize("typed", ["0", "two", "1,1", "-2", "1.5"])
def test_bad_devices_are_refused_in_one_line(typed):
    with pytest.raises(ConfigError) as err:
        check_value("training", "devices", typed)
    assert "training.devices" in str(err.value) and "\n" not in str(err.value)


def test_settings_have_help_and_survive_yaml(tmp_path):
    config = apply_overrides(Config(), ["training.devices=0,1", "training.strategy=fsdp"])
    text = config_to_yaml(config)
    assert "every visible GPU" in text and "fsdp (weights sharded" in text
    (tmp_path / "c.yaml").write_text(text)
    again = load_config(tmp_path / "c.yaml")
    assert (again.training.devices, again.training.strategy) == ("0,1", "fsdp")
    with pytest.raises(ConfigError):
        apply_overrides(Config(), ["training.strategy=deepspeed"])


def test_processes_per_device_setting():
    assert devices.count_processes("auto", 0) == (1, None, True)  # CPU, auto: one process, as before
    assert devices.count_processes("2", 0) == (2, None, True)  # CPU: two gloo processes
    assert devices.count_processes("auto", 8) == (8, None, False)
    assert devices.count_processes("2", 8) == (2, [0, 1], False)
    assert devices.count_processes("1,3", 4) == (2, [1, 3], False)
    with pytest.raises(DistributedError, match="only 2 GPU"):
        devices.count_processes("4", 2)
    with pytest.raises(DistributedError, match="no GPU is visible"):
        devices.count_processes("0,1", 0)
    with pytest.raises(DistributedError, match="GPU 5"):
        devices.count_processes("0,5", 4)


def test_strategy_choice():
    fits = {"ddp": 20 * GiB, "fsdp": 8 * GiB}
    assert devices.choose_strategy("auto", 1, False, fits, 80 * GiB)[0] == "single"
    assert devices.choose_strategy("auto", 4, True, {}, None)[0] == "ddp"  # CPU processes
    assert devices.choose_strategy("auto", 4, False, fits, 80 * GiB)[0] == "ddp"
    strategy, why = devices.choose_strategy("auto", 4, False, {"ddp": 140 * GiB, "fsdp": 40 * GiB}, 80 * GiB)
    assert strategy == "fsdp" and "does not fit" in why
    assert devices.choose_strategy("ddp", 4, False, {"ddp": 140 * GiB}, 80 * GiB)[0] == "ddp"  # the user's word
    with pytest.raises(DistributedError, match="needs GPUs"):
        devices.choose_strategy("fsdp", 2, True, {}, None)
    with pytest.raises(DistributedError, match="8-bit"):
        devices.choose_strategy("fsdp", 2, False, {}, None, load_in="8bit")


def test_plan_on_this_cpu_and_node_flags():
    config = apply_overrides(Config(), ["training.devices=2"])
    plan = devices.plan_devices(config, gpu_count=0)
    assert (plan.world_size, plan.strategy, plan.backend, plan.launches) == (2, "ddp", "gloo", True)
    assert not devices.plan_devices(Config(), gpu_count=0).launches
    two_nodes = devices.plan_devices(config, gpu_count=0, nodes=devices.Nodes(2, 1, "10.0.0.1:29501"))
    assert two_nodes.world_size == 4
    with pytest.raises(DistributedError, match="--master"):
        devices.Nodes(2, 0, None).check()
    with pytest.raises(DistributedError, match="ADDR:PORT"):
        devices.Nodes(2, 0, "10.0.0.1").check()
    with pytest.raises(DistributedError, match="node-rank"):
        devices.Nodes(2, 2, "h:1").check()


def test_accelerate_config_and_launch_line(tmp_path):
    import yaml

    config = Config()
    ddp = devices.DevicePlan(2, cpu=True, strategy="ddp")
    path = devices.write_accelerate_config(tmp_path, ddp, config)
    saved = yaml.safe_load(path.read_text())
    assert saved["distributed_type"] == "MULTI_GPU" and saved["use_cpu"] is True and saved["num_processes"] == 2
    assert "accelerate launch --config_file" in path.read_text().splitlines()[1]
    fsdp = devices.DevicePlan(4, cpu=False, gpu_ids=[0, 1, 2, 3], strategy="fsdp",
                        nodes=devices.Nodes(2, 1, "10.0.0.1:29501"))
    cfg = devices.accelerate_config(fsdp, config)
    assert cfg["distributed_type"] == "FSDP" and cfg["num_processes"] == 8 and cfg["num_machines"] == 2
    assert cfg["machine_rank"] == 1 and cfg["main_process_ip"] == "10.0.0.1" and cfg["main_process_port"] == 29501
    fc = cfg["fsdp_config"]
    assert fc["fsdp_cpu_ram_efficient_loading"] and fc["fsdp_sync_module_states"] and not fc["fsdp_use_orig_params"]
    devices.write_accelerate_config(tmp_path, fsdp, config)
    assert devices.saved_nodes(tmp_path) == devices.Nodes(2, 1, "10.0.0.1:29501")  # --resume keeps the machine layout
    cmd = d.launch_command(path, tmp_path, resume=True)
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[-3:] == [str(tmp_path), "--worker", "--resume"]


def test_accelerate_reads_the_written_config(tmp_path):
    """The file is one accelerate itself accepts (its own loader, not ours)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = devices.write_accelerate_config(tmp_path, devices.DevicePlan(4, cpu=False, strategy="fsdp"), Config())
    loaded = load_config_from_file(str(path))
    assert str(loaded.distributed_type).endswith("FSDP") and loaded.num_processes == 4
    assert loaded.fsdp_config["fsdp_cpu_ram_efficient_loading"] is True


def test_rank_helpers_follow_the_launcher_environment(monkeypatch, tmp_path):
    from lora_tui.core.run.runs import RunDirectory

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert (d.rank(), d.world_size(), d.is_main_process(), d.strategy()) == (1, 2, False, "fsdp")
    run = RunDirectory(tmp_path)
    quiet = d.for_this_rank(run)
    quiet.append_event("step", step=1)
    quiet.write_status("running")
    assert not run.events_path.exists() and not run.status_path.exists(), "rank 1 must not write"
    assert not d.agree_to_stop(False) and d.agree_to_stop(True)  # no process group: its own answer
    monkeypatch.setenv("RANK", "0")
    assert d.for_this_rank(run) is run


def test_per_gpu_memory_per_strategy():
    from lora_tui.core.plan.memory import Workload
    from lora_tui.core.plan.strategies import describe, per_gpu_bytes

    plan = Workload(model="Llama-3.1-8B", quant="none", r=16, seq_len=1024, batch=1, grad_checkpointing=True)
    one, two, four = (per_gpu_bytes(plan, n) for n in (1, 2, 4))
    assert one["ddp"] == one["single"] == one["fsdp"]
    assert two["ddp"] > two["single"] > two["fsdp"] > four["fsdp"]
    assert four["ddp"] == two["ddp"], "DDP keeps a full copy on every GPU"
    # 16 GB of bf16 weights: sharded over 4 GPUs the weights are a quarter, plus two gathered layers.
    assert four["fsdp"] < 0.5 * four["ddp"]
    assert "FSDP" in describe(two, 2)


TORCHRUN_FAILURE = """
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
lora_tui.core.trainer_main FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-23_19:40:01
  host      : box
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 4100)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-23_19:40:00
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4101)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4101
============================================================
"""


def test_torchrun_failure_summary_becomes_a_reason(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("lots of training output\n" + TORCHRUN_FAILURE)
    assert rank_failure(log) == "rank 1 (pid 4101) was killed by SIGKILL"
    log.write_text(TORCHRUN_FAILURE.replace("-9 (pid: 4101)", "3 (pid: 4101)"))
    assert rank_failure(log) == "rank 1 (pid 4101) exited with code 3"
    log.write_text("no summary\n")
    assert rank_failure(log) is None


# --- topology through a fake NVML ----------------------------------------------------------------

class FakeTopologyNVML(FakeNVML):
    """FAKE NVML (no GPU here): four GPUs, 0-1 and 2-3 joined by NVLink, the pairs on PCIe across sockets."""

    NVML_FEATURE_ENABLED = 1
    NVML_NVLINK_MAX_LINKS = 6
    LINKS = {0: [1, 1, 1, 1], 1: [0, 0, 0, 0], 2: [3, 3], 3: [2, 2]}

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=f"00000000:{self.gpus.index(h) + 0x10:02X}:00.0".encode())

    def nvmlDeviceGetNvLinkState(self, h, link):
        peers = self.LINKS.get(self.gpus.index(h), [])
        if link >= len(peers):
            raise self.NVMLError(3)  # NOT_SUPPORTED: no such link
        return 1

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
        peer = self.LINKS[self.gpus.index(h)][link]
        return SimpleNamespace(busId=f"0000:{peer + 0x10:02X}:00.0")

    def nvmlDeviceGetTopologyCommonAncestor(self, h1, h2):
        return 50  # SYS


def test_topology_from_fake_nvml():
    from lora_tui.core.machine.hardware import probe_hardware

    gpus = [dict(A100, procs=[], name=f"NVIDIA A100 #{i}") for i in range(4)]
    report = probe_hardware(FakeTopologyNVML(gpus), check_libraries=False)
    links = {(p["a"], p["b"]): p["link"] for p in report.topology}
    assert links == {(0, 1): "NV4", (2, 3): "NV2", (0, 2): "SYS", (0, 3): "SYS", (1, 2): "SYS", (1, 3): "SYS"}
    assert "GPU0-GPU1: NV4 (NVLink x4)" in topology_lines(report.topology)
    plain = probe_hardware(FakeNVML([dict(A100, procs=[]), dict(A100, procs=[])]), check_libraries=False)
    assert [p["link"] for p in plain.topology] == ["?"], "an NVML without topology calls: unknown, no crash"
    line = strategy_line(apply_overrides(Config(), ["model.name=embedded"]), report)
    assert line.startswith("Plan: 4 GPUs, DDP"), line


def test_doctor_prints_topology_and_plan(monkeypatch, capsys):
    from lora_tui.commands import hardware as cmd
    from lora_tui.core.machine import hardware

    gpus = [dict(A100, procs=[], name=f"NVIDIA A100 #{i}") for i in range(4)]
    real = hardware.probe_hardware
    monkeypatch.setattr(hardware, "probe_hardware", lambda *a, **k: real(FakeTopologyNVML(gpus), check_libraries=False))
    assert cmd.run(SimpleNamespace(command="doctor", json=False)) == 0
    out = capsys.readouterr().out
    assert "GPU0-GPU1: NV4" in out and "GPU1-GPU3: SYS" in out and "Plan: 4 GPUs, DDP" in out


def test_train_refuses_bad_node_flags_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lora_tui", "train", "--nodes", "2", "--node-rank", "0",
                          "--run-dir", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--master" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


def test_estimate_gives_per_gpu_figures_on_several_gpus(monkeypatch, capsys):
    import json

    from lora_tui.cli import main
    from lora_tui.core.machine import hardware

    gpus = [dict(A100, procs=[], used=0, name=f"NVIDIA A100 #{i}") for i in range(4)]
    real = hardware.probe_hardware
    monkeypatch.setattr(hardware, "probe_hardware", lambda *a, **k: real(FakeTopologyNVML(gpus), check_libraries=False))
    main(["estimate", "--model", "Llama-3.1-8B", "--json"])
    out = json.loads(capsys.readouterr().out)
    per_gpu = out["per_gpu"]
    assert per_gpu["world_size"] == 4 and per_gpu["strategy"] == "ddp"
    assert per_gpu["fsdp_bytes"] < per_gpu["ddp_bytes"]
    main(["estimate", "--model", "Llama-3.1-8B", "training.devices=2", "training.strategy=fsdp"])
    assert "On 2 GPUs, per GPU: DDP" in capsys.readouterr().out
    main(["estimate", "--model", "Llama-3.1-8B", "--json", "training.devices=1"])
    assert json.loads(capsys.readouterr().out)["per_gpu"] is None


def test_training_screen_gpu_panel_has_one_line_per_gpu():
    from lora_tui.ui.widgets.run_panels import system_panel

    gpus = [{"index": i, "util": 90 + i, "mem_used": (60 + i) * GiB, "mem_total": 80 * GiB, "temp": 70} for i in range(8)]
    lines = system_panel({"gpus": gpus, "rss": GiB}).plain.splitlines()
    assert [line.split()[0] for line in lines[:8]] == [f"GPU{i}" for i in range(8)]
    assert "97% 67/80G" in lines[7] and all(len(line) <= 33 for line in lines)
    single = system_panel({"gpus": gpus[:1]}).plain.splitlines()
    assert single[0] == "GPU 0" and len(single) == 4, "one GPU keeps its detailed block"


def test_supervisor_keeps_rank_0s_reason_and_names_a_killed_rank(tmp_path):
    from lora_tui.core.train.distributed_run import settle
    from lora_tui.core.run.runs import RunDirectory

    plan = devices.DevicePlan(2, cpu=True, strategy="ddp")
    run = RunDirectory(tmp_path)
    run.append_event("failed", reason="data.jsonl line 3: no assistant turn", fix="fix the row")
    run.write_status("failed", step=0)
    run.log_path.write_text(TORCHRUN_FAILURE.replace("-9 (pid: 4101)", "1 (pid: 4101)"))
    assert settle(run, 1, plan) == "failed"
    assert [e["reason"] for e in run.read_events() if e["type"] == "failed"] == ["data.jsonl line 3: no assistant turn"]
    run.log_path.write_text(TORCHRUN_FAILURE)  # a rank killed by a signal: that is the reason to show
    assert settle(run, 1, plan) == "failed"
    last = [e for e in run.read_events() if e["type"] == "failed"][-1]
    assert "rank 1 (pid 4101) was killed by SIGKILL" in last["reason"] and "--resume" in last["fix"]
    size = run.log_path.stat().st_size
    run.write_status("running", step=3)
    assert settle(run, 1, plan, log_start=size) == "failed"  # an old summary does not count
    assert "launcher exited with code 1" in run.read_status()["message"]
