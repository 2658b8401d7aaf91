"""The hardware probe and the system sampler against fake NVML backends.

The NVML backends (tests/support/nvml.py) are FAKE on purpose: this machine (and CI) has no NVIDIA
GPU or driver, so the only way to exercise the one-GPU, two-GPU and NVML-error
paths is a stand-in module with pynvml's function names. The errors raised are
pynvml's real NVMLError classes, so the probe's error naming is tested against
the codes a real driver returns.
"""

from __future__ import annotations

import json
import os

import pynvml
import pytest

from lora_tui.core.machine.hardware import GPUInfo, HardwareReport, SystemSampler, device_for, probe_hardware
from tests.support.nvml import A100, T4, FakeNVML, GiB

def test_no_driver_gives_cpu_only_report_with_named_reason():
    report = probe_hardware(FakeNVML(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND), check_libraries=False)
    assert report.cpu_only and report.gpus == []
    assert "not found" in report.nvml_error and "driver" in report.nvml_error
    assert report.cpu_count >= 1 and report.ram_total > 0 and 0 < report.ram_available <= report.ram_total


def test_real_pynvml_without_driver_never_raises():
    report = probe_hardware(check_libraries=False)  # this machine: no driver at all
    assert isinstance(report, HardwareReport)
    if report.cpu_only:
        assert report.nvml_error


def test_one_gpu_all_fields():
    nvml = FakeNVML([A100])
    report = probe_hardware(nvml, check_libraries=False)
    assert not report.cpu_only and report.nvml_error is None
    gpu = report.gpus[0]
    assert isinstance(gpu, GPUInfo)
    assert gpu.name == "NVIDIA A100-SXM4-80GB"
    assert (gpu.memory_total, gpu.memory_used, gpu.memory_free) == (80 * GiB, 2 * GiB, 78 * GiB)
    assert gpu.utilization == 37 and gpu.temperature == 51
    assert gpu.power_draw == pytest.approx(93.5) and gpu.power_limit == pytest.approx(400.0)
    assert gpu.compute_capability == (8, 0) and gpu.bf16 is True
    assert gpu.processes == [{"pid": os.getpid(), "name": gpu.processes[0]["name"], "used_bytes": 2 * GiB}]
    assert gpu.processes[0]["name"] not in ("", "?")  # our own pid has a readable name
    assert report.driver_version == "550.54.15" and report.cuda_driver_version == "12.4"
    assert nvml.shutdowns == 1


def test_two_gpus_and_bf16_only_from_ampere():
    report = probe_hardware(FakeNVML([A100, T4]), check_libraries=False)
    assert [g.index for g in report.gpus] == [0, 1]
    assert [g.bf16 for g in report.gpus] == [True, False]
    assert report.gpus[1].memory_free == 15 * GiB
    assert json.loads(json.dumps(report.to_dict()))["gpus"][1]["compute_capability"] == [7, 5]


@pytest.mark.parametrize("code, words", [
    (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "version mismatch"),
    (pynvml.NVML_ERROR_NO_PERMISSION, "permission"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
])
def test_nvml_errors_are_named(code, words):
    report = probe_hardware(FakeNVML([A100], init_error=code), check_libraries=False)
    assert report.cpu_only
    assert words in report.nvml_error.lower()


def test_unsupported_queries_leave_the_rest_of_the_gpu():
    nvml = FakeNVML([A100], unsupported={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetUtilizationRates"})
    gpu = probe_hardware(nvml, check_libraries=False).gpus[0]
    assert gpu.power_draw is None and gpu.utilization is None
    assert gpu.memory_total == 80 * GiB and gpu.bf16


def test_failure_after_init_is_reported_not_raised():
    nvml = FakeNVML([A100], unsupported={"nvmlDeviceGetCount"})
    report = probe_hardware(nvml, check_libraries=False)
    assert report.cpu_only and "not supported" in report.nvml_error
    assert nvml.shutdowns == 1


def test_sampler_shape_with_a_fake_gpu():
    sampler = SystemSampler(nvml=FakeNVML([A100, T4]))
    sample = sampler.sample()
    assert set(sample) == {"gpus", "cpu_percent", "rss", "ram_used", "ram_total"}
    assert [set(g) for g in sample["gpus"]] == [{"index", "util", "mem_used", "mem_total", "temp", "power"}] * 2
    assert sample["gpus"][0]["mem_used"] == 2 * GiB and sample["gpus"][0]["power"] == pytest.approx(93.5)
    assert sample["rss"] > 10 * 1024**2  # this Python process
    assert 0 < sample["ram_used"] < sample["ram_total"]
    assert isinstance(sample["cpu_percent"], float)
    json.dumps(sample)
    sampler.close()


def test_sampler_without_driver_or_process_never_raises():
    sampler = SystemSampler(pid=2**22 + 12345, nvml=FakeNVML(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    sample = sampler.sample()
    assert sample["gpus"] == [] and sample["rss"] == 0 and sample["ram_total"] > 0


def test_sampler_counts_children():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * (64 * 1024 * 1024); "
                              "print('allocated', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        # The child says when its 64 MiB are written (a fixed pause raced a slow start on a busy machine).
        assert child.stdout.readline() == "allocated\n", "the child ended before allocating"
        alone = SystemSampler(pid=child.pid).sample()["rss"]
        with_children = SystemSampler().sample()["rss"]
        assert alone > 60 * 1024**2
        assert with_children > alone  # our RSS plus the child's
    finally:
        child.kill()
        child.wait()


def test_device_for_is_the_asked_device_else_the_gpu_nvml_saw():
    gpu = GPUInfo(index=0, name="NVIDIA A100", memory_total=80 * GiB, memory_free=79 * GiB, memory_used=GiB)
    with_gpu = HardwareReport(gpus=[gpu], cpu_count=8, ram_total=64 * GiB, ram_available=60 * GiB)
    without = HardwareReport(gpus=[], cpu_count=8, ram_total=64 * GiB, ram_available=60 * GiB)
    assert (device_for(with_gpu), device_for(without), device_for(None)) == ("cuda", "cpu", "cpu")
    assert device_for(with_gpu, "cpu") == "cpu"
    assert device_for(without, "cuda") == "cuda"  # `estimate --device cuda` plans for a GPU this machine lacks
