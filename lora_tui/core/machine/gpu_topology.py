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
