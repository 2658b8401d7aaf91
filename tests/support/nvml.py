"""A FAKE pynvml module and two GPUs described for it (tests/test_hardware.py, tests/test_distributed.py).

Fake on purpose: this machine (and CI) has no NVIDIA GPU or driver, so the only way to exercise the
one-GPU, two-GPU and NVML-error paths is a stand-in module with pynvml's function names. The errors
raised are pynvml's real NVMLError classes, so the probe's error naming is tested against the codes a
real driver returns.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pynvml

GiB = 1024**3


class FakeNVML:
    """A stand-in for the pynvml module: GPUs described as dicts, optional failures."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus=(), init_error=None, unsupported=(), driver="550.54.15", cuda=12040):
        self.gpus = list(gpus)
        self.init_error = init_error
        self.unsupported = set(unsupported)  # function names that raise NOT_SUPPORTED
        self.driver, self.cuda = driver, cuda
        self.shutdowns = 0

    def _check(self, name):
        if name in self.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlInit(self):
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlDeviceGetCount(self):
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.gpus[index]

    def nvmlDeviceGetName(self, h):
        return h["name"].encode()  # older pynvml returns bytes

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=h["total"], free=h["total"] - h["used"], used=h["used"])

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=h.get("util", 0), memory=0)

    def nvmlDeviceGetTemperature(self, h, sensor):
        return h.get("temp", 40)

    def nvmlDeviceGetPowerUsage(self, h):
        self._check("nvmlDeviceGetPowerUsage")
        return h.get("power_mw", 70_000)

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return h.get("limit_mw", 400_000)

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return h["cc"]

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in h.get("procs", [])]


A100 = {"name": "NVIDIA A100-SXM4-80GB", "total": 80 * GiB, "used": 2 * GiB, "cc": (8, 0), "util": 37,
        "temp": 51, "power_mw": 93_500, "limit_mw": 400_000, "procs": [(os.getpid(), 2 * GiB)]}
T4 = {"name": "Tesla T4", "total": 16 * GiB, "used": 1 * GiB, "cc": (7, 5), "procs": []}
