"""How the GPUs of this machine are connected (NVLink or which PCIe path), as NVML reports it,
and which multi-GPU strategy a plan would use. What ``nvidia-smi topo -m`` shows, as data.

Called by ``hardware.probe_hardware`` with its (injectable) NVML module while NVML is
initialised; never raises: a call the driver does not support leaves that pair 'unknown'.
No torch, no textual.
"""

from __future__ import annotations

# nvmlGpuTopologyLevel_t -> (nvidia-smi's short name, words)
_LEVELS = {
    0: ("SELF", "the same board"),
    10: ("PIX", "PCIe, one switch"),
    20: ("PXB", "PCIe, several switches"),
    30: ("PHB", "PCIe through the CPU's host bridge"),
    40: ("NODE", "PCIe across host bridges of one CPU"),
    50: ("SYS", "PCIe across CPU sockets (slowest)"),
}


def _bus_id(value) -> str:
    bus = getattr(value, "busId", value)
    if isinstance(bus, bytes):
        bus = bus.decode(errors="replace")
    return str(bus).lower().lstrip("0")  # NVML pads the domain differently in the two calls


def _nvlinks(nvml, handles: list, index: int, bus_ids: list[str]) -> dict[int, int]:
    """{peer GPU index: active NVLinks from GPU ``index`` to it}."""
    links: dict[int, int] = {}
    for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
        try:
            if nvml.nvmlDeviceGetNvLinkState(handles[index], link) != getattr(nvml, "NVML_FEATURE_ENABLED", 1):
                continue
            remote = _bus_id(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handles[index], link))
        except Exception:  # no NVLink on this GPU, or this link does not exist: stop asking
            break
        if remote in bus_ids:
            peer = bus_ids.index(remote)
            links[peer] = links.get(peer, 0) + 1
        else:  # an NVSwitch: every GPU behind it is reachable over NVLink
            links[-1] = links.get(-1, 0) + 1
    return links


def probe_topology(nvml, count: int) -> list[dict]:
    """One entry per GPU pair: {'a', 'b', 'link': 'NV4' | 'PIX' | ..., 'words'}."""
    if count < 2:
        return []
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    except Exception:
        return []
    bus_ids = []
    for handle in handles:
        try:
            bus_ids.append(_bus_id(nvml.nvmlDeviceGetPciInfo(handle)))
        except Exception:
            bus_ids.append(f"?{len(bus_ids)}")
    nvlinks = [_nvlinks(nvml, handles, i, bus_ids) for i in range(count)]
    pairs = []
    for a in range(count):
        for b in range(a + 1, count):
            n = nvlinks[a].get(b, 0) or (nvlinks[a].get(-1, 0) if nvlinks[b].get(-1) else 0)
            if n:
                pairs.append({"a": a, "b": b, "link": f"NV{n}", "words": f"NVLink x{n}"})
                continue
            try:
                level = int(nvml.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b]))
                short, words = _LEVELS.get(level, ("?", f"topology level {level}"))
            except Exception:
                short, words = "?", "unknown (the driver does not report it)"
            pairs.append({"a": a, "b": b, "link": short, "words": words})
    return pairs


def topology_lines(pairs: list[dict]) -> list[str]:
    """'GPU0-GPU1: NV12 (NVLink x12)' lines for doctor and the hardware screen."""
    return [f"GPU{p['a']}-GPU{p['b']}: {p['link']} ({p['words']})" for p in pairs]


def strategy_line(config, report) -> str:
    """'Plan: 4 GPUs, ddp (the model fits on one GPU ...)' or why it is one device."""
    from lora_tui.core.train.distributed import DistributedError, plan_devices

    try:
        plan = plan_devices(config, gpu_count=len(report.gpus), hardware=report)
    except DistributedError as exc:
        return f"Plan: {exc}"
    if not plan.launches:
        return "Plan: one process on " + ("the CPU" if plan.cpu else "one GPU") + " (training.devices to use more)"
    where = "CPU processes (gloo)" if plan.cpu else "GPUs"
    line = f"Plan: {plan.world_size} {where}, {plan.strategy.upper()}: {plan.reason}"
    if plan.per_gpu:
        from lora_tui.core.plan.strategies import describe

        line += f"; {describe(plan.per_gpu, plan.world_size)}"
    return line


def per_gpu_summary(config, report, memory_plan) -> dict | None:
    """For `estimate`: per-GPU bytes of each strategy and the one a run would take, when the
    config would use more than one GPU here; None for one device."""
    from lora_tui.core.train.distributed import DistributedError, count_processes, plan_devices
    from lora_tui.core.plan.strategies import per_gpu_bytes

    try:
        processes, ids, cpu = count_processes(config.training.devices, len(report.gpus))
        if cpu or processes < 2:
            return None
        plan = plan_devices(config, gpu_count=len(report.gpus), hardware=report)
    except DistributedError as exc:
        return {"error": str(exc)}
    figures = per_gpu_bytes(memory_plan, plan.world_size)
    return {"world_size": plan.world_size, "ddp_bytes": figures["ddp"], "fsdp_bytes": figures["fsdp"],
            "strategy": plan.strategy, "reason": plan.reason}
