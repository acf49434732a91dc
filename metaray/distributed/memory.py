"""What a process's memory costs, from /proc (Linux): resident, unique and shared.

RSS counts pages shared with other processes (the object store's mapping of a
shared backbone) in full in every process; USS counts only the pages this
process alone holds, i.e. what one more actor adds to the node.
"""

from __future__ import annotations

from pathlib import Path

MIB = 1024 * 1024


def process_memory(pid: int | str = "self") -> dict[str, float]:
    """{rss, pss, uss, shared, peak_rss} in MiB (peak_rss: the most RSS the process has
    had, VmHWM); empty where /proc/PID/smaps_rollup is missing (not Linux)."""
    rollup = Path(f"/proc/{pid}/smaps_rollup")
    if not rollup.is_file():
        return {}
    kib: dict[str, int] = {}
    for line in rollup.read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        kib[key.strip()] = int(value.split()[0])
    status = Path(f"/proc/{pid}/status")
    peak = next((ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM")), "VmHWM: 0 kB")
    kib["VmHWM"] = int(peak.split()[1])
    private = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)
    shared = kib.get("Shared_Clean", 0) + kib.get("Shared_Dirty", 0)
    return {
        name: value * 1024 / MIB
        for name, value in {
            "rss": kib.get("Rss", 0),
            "pss": kib.get("Pss", 0),
            "uss": private,
            "shared": shared,
            "peak_rss": kib["VmHWM"],
        }.items()
    }
