"""What machine are we on: NVIDIA GPUs via NVML, CPU cores and RAM via psutil,
and the versions of torch / CUDA / bitsandbytes.

``probe_hardware`` is the one-off report (``lora-tui doctor``, the wizard's
hardware screen); ``SystemSampler`` is the cheap periodic sample the trainer
writes as "system" events. Neither ever raises: no driver, no GPU or an NVML
error gives a CPU-only report with the error's name in ``nvml_error``. The NVML
module is injectable (``nvml=``) so tests can stand in for a GPU. torch and
bitsandbytes are imported only inside ``probe_hardware``, never at module top.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# NVML error codes (nvml.h) -> what to tell the user.
_NVML_REASONS = {
    1: "NVML was not initialised",
    3: "not supported by this GPU or driver",
    4: "insufficient permissions to query the GPU (check the /dev/nvidia* device permissions)",
    9: "the NVIDIA driver is not loaded",
    12: "the NVIDIA driver library (libnvidia-ml.so) was not found: no NVIDIA driver installed",
    13: "the driver is too old for this NVML call",
    15: "the GPU has fallen off the bus or is otherwise lost",
    18: "NVIDIA driver/library version mismatch: the kernel module and libnvidia-ml differ (a reboot usually fixes it)",
}


@dataclass
class GPUInfo:
    index: int
    name: str
    memory_total: int  # bytes
    memory_free: int
    memory_used: int
    utilization: int | None = None  # percent
    temperature: int | None = None  # Celsius
    power_draw: float | None = None  # watts
    power_limit: float | None = None  # watts
    compute_capability: tuple[int, int] | None = None
    bf16: bool = False
    processes: list[dict] = field(default_factory=list)  # {pid, name, used_bytes}


@dataclass
class HardwareReport:
    gpus: list[GPUInfo]
    cpu_count: int
    ram_total: int
    ram_available: int
    torch_version: str | None = None
    cuda_version: str | None = None  # CUDA runtime torch was built with
    bitsandbytes_version: str | None = None
    bitsandbytes_ok: bool | None = None  # None: not installed or not checked
    driver_version: str | None = None
    nvml_error: str | None = None
    cuda_driver_version: str | None = None  # highest CUDA the driver supports
    notes: list[str] = field(default_factory=list)
    topology: list[dict] = field(default_factory=list)  # GPU pairs: NVLink / PCIe path (gpu_topology)

    @property
    def cpu_only(self) -> bool:
        return not self.gpus

    def to_dict(self) -> dict:
        out = asdict(self)
        out["cpu_only"] = self.cpu_only
        for gpu in out["gpus"]:
            if gpu["compute_capability"] is not None:
                gpu["compute_capability"] = list(gpu["compute_capability"])
        return out


def device_for(hardware: HardwareReport | None, device: str | None = None) -> str:
    """The device a plan or a run is for: ``device`` when one was asked for ("cpu" / "cuda"; an estimate
    may plan for a GPU this machine lacks), else "cuda" where NVML saw a GPU, else "cpu" (no report: no GPU)."""
    return device or ("cuda" if getattr(hardware, "gpus", None) else "cpu")


def _load_nvml(nvml):
    if nvml is not None:
        return nvml
    import pynvml

    return pynvml


def nvml_reason(exc: BaseException) -> str:
    """A named, user-facing reason for an NVML failure."""
    code = getattr(exc, "value", None)
    text = str(exc) or type(exc).__name__
    reason = _NVML_REASONS.get(code)
    return f"{reason} ({text})" if reason else f"NVML error: {text}"


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _try(call, *args, default=None):
    try:
        return call(*args)
    except Exception:  # one unsupported query must not hide the rest of the GPU
        return default


def _process_name(pid: int) -> str:
    try:
        import psutil

        return psutil.Process(pid).name()
    except Exception:  # other containers' pids are invisible here
        return "?"


def _gpu_info(nvml, index: int) -> GPUInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    util = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
    power = _try(nvml.nvmlDeviceGetPowerUsage, handle)
    limit = _try(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    cc = _try(nvml.nvmlDeviceGetCudaComputeCapability, handle)
    cc = (int(cc[0]), int(cc[1])) if cc else None
    procs = []
    for proc in _try(nvml.nvmlDeviceGetComputeRunningProcesses, handle, default=[]) or []:
        used = getattr(proc, "usedGpuMemory", None)
        procs.append({"pid": int(proc.pid), "name": _process_name(int(proc.pid)), "used_bytes": int(used) if used else None})
    return GPUInfo(
        index=index,
        name=_text(_try(nvml.nvmlDeviceGetName, handle, default="NVIDIA GPU")),
        memory_total=int(mem.total),
        memory_free=int(mem.free),
        memory_used=int(mem.used),
        utilization=int(util.gpu) if util is not None else None,
        temperature=_try(nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)),
        power_draw=power / 1000 if power is not None else None,
        power_limit=limit / 1000 if limit is not None else None,
        compute_capability=cc,
        bf16=bool(cc and cc[0] >= 8),  # Ampere and newer
        processes=procs,
    )


def _probe_gpus(nvml, report: HardwareReport) -> None:
    try:
        nvml = _load_nvml(nvml)
    except ImportError:
        report.nvml_error = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        return
    try:
        nvml.nvmlInit()
    except Exception as exc:
        report.nvml_error = nvml_reason(exc)
        return
    try:
        report.driver_version = _text(_try(nvml.nvmlSystemGetDriverVersion, default="")) or None
        cuda = _try(nvml.nvmlSystemGetCudaDriverVersion)
        report.cuda_driver_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                report.gpus.append(_gpu_info(nvml, index))
            except Exception as exc:
                report.notes.append(f"GPU {index} could not be read: {nvml_reason(exc)}")
        from lora_tui.core.machine.gpu_topology import probe_topology

        report.topology = probe_topology(nvml, len(report.gpus))
    except Exception as exc:
        report.nvml_error = nvml_reason(exc)
    finally:
        _try(nvml.nvmlShutdown)


def _cgroup_memory() -> tuple[int, int] | None:
    """(limit, used) of this container's memory cgroup, when it is tighter than the machine."""
    for limit_file, used_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                  ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max":
                return None
            return int(raw), int(Path(used_file).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def _memory() -> tuple[int, int]:
    import psutil

    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    cgroup = _cgroup_memory()
    if cgroup and cgroup[0] < total:
        total, available = cgroup[0], min(available, max(0, cgroup[0] - cgroup[1]))
    return total, available


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _probe_libraries(report: HardwareReport) -> None:
    from importlib import metadata

    try:
        report.bitsandbytes_version = metadata.version("bitsandbytes")
    except metadata.PackageNotFoundError:
        report.bitsandbytes_version = None
    try:
        import torch
    except Exception as exc:
        report.notes.append(f"torch cannot be imported: {exc}")
        return
    report.torch_version = torch.__version__.split("+")[0] if torch.__version__ else None
    report.cuda_version = torch.version.cuda
    if report.gpus and not torch.cuda.is_available():
        report.notes.append("NVML sees a GPU but torch cannot use it: this torch is a CPU build or its CUDA is newer than the driver.")
    if report.bitsandbytes_version is None:
        return
    try:  # a real 4-bit round trip on the device training would use
        import bitsandbytes.functional as bnbf

        device = "cuda" if report.gpus and torch.cuda.is_available() else "cpu"
        x = torch.randn(256, dtype=torch.float32, device=device)
        packed, state = bnbf.quantize_4bit(x, quant_type="nf4")
        back = bnbf.dequantize_4bit(packed, state)
        report.bitsandbytes_ok = bool(torch.isfinite(back).all()) and float((back - x).abs().mean()) < 0.5
    except Exception as exc:
        report.bitsandbytes_ok = False
        report.notes.append(f"bitsandbytes does not work here: {type(exc).__name__}: {str(exc)[:200]}")


def probe_hardware(nvml=None, *, check_libraries: bool = True) -> HardwareReport:
    """GPUs, CPU, RAM and library versions. Never raises.

    nvml: an NVML module (default: ``import pynvml``). check_libraries=False skips
    importing torch and testing bitsandbytes (fast, for tests and frequent refreshes).
    """
    try:
        total, available = _memory()
    except Exception:
        total, available = 0, 0
    report = HardwareReport(gpus=[], cpu_count=_cpu_count(), ram_total=total, ram_available=available)
    _probe_gpus(nvml, report)
    if check_libraries:
        try:
            _probe_libraries(report)
        except Exception as exc:  # a broken install is something to report, not to crash on
            report.notes.append(f"library check failed: {type(exc).__name__}: {exc}")
    return report


class SystemSampler:
    """Cheap periodic samples of GPU, CPU and memory for the trainer's "system" events. Never raises."""

    def __init__(self, pid: int | None = None, nvml=None):
        self.pid = pid or os.getpid()
        self._nvml = None
        self._handles: list = []
        try:
            import psutil

            self._process = psutil.Process(self.pid)
            psutil.cpu_percent(interval=None)  # primes the counter: the next call measures since now
        except Exception:
            self._process = None
        try:
            nvml = _load_nvml(nvml)
            nvml.nvmlInit()
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            self._nvml = nvml
        except Exception:  # no driver / no GPU: samples carry an empty GPU list
            self._handles = []

    def _gpus(self) -> list[dict]:
        out = []
        for index, handle in enumerate(self._handles):
            try:
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                util = _try(self._nvml.nvmlDeviceGetUtilizationRates, handle)
                power = _try(self._nvml.nvmlDeviceGetPowerUsage, handle)
                out.append({"index": index, "util": int(util.gpu) if util is not None else None,
                            "mem_used": int(mem.used), "mem_total": int(mem.total),
                            "temp": _try(self._nvml.nvmlDeviceGetTemperature, handle, getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0)),
                            "power": power / 1000 if power is not None else None})
            except Exception:
                continue
        return out

    def _rss(self) -> int:
        if self._process is None:
            return 0
        total = 0
        try:
            for proc in [self._process, *self._process.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except Exception:  # a child may exit between listing and reading
                    continue
        except Exception:
            return total
        return total

    def sample(self) -> dict:
        out = {"gpus": [], "cpu_percent": 0.0, "rss": 0, "ram_used": 0, "ram_total": 0}
        try:
            import psutil

            vm = psutil.virtual_memory()
            out.update(cpu_percent=float(psutil.cpu_percent(interval=None)), ram_used=int(vm.total - vm.available),
                       ram_total=int(vm.total))
        except Exception:
            pass
        out["rss"] = self._rss()
        out["gpus"] = self._gpus()
        return out

    def close(self) -> None:
        if self._nvml is not None:
            _try(self._nvml.nvmlShutdown)
            self._nvml, self._handles = None, []
