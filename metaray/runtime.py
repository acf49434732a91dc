"""What both the trainer and the server need of their process and cluster: joining Ray
(`connect`), and what a process's memory costs, from /proc (Linux): resident, unique and shared.

RSS counts pages shared with other processes (the object store's mapping of a
shared backbone) in full in every process; USS counts only the pages this
process alone holds, i.e. what one more actor adds to the node.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import ray

from metaray.config import RayConfig
from metaray.errors import MetarayError

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


class ClusterUnreachable(MetarayError, ConnectionError):
    """The configured Ray address does not answer; the message names it."""


def check_reachable(address: str, timeout_s: float) -> None:
    """Fail within `timeout_s` where host:port does not accept a TCP connection
    (`ray.init` would otherwise retry for minutes). `auto` and schemes Ray resolves
    itself are left to Ray."""
    if address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(f"Ray address {address!r} is not host:port (set ray.address or RAY_ADDRESS)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterUnreachable(
            f"Ray cluster at {address!r} is unreachable after {timeout_s:.0f} s ({err}); "
            "check ray.address / RAY_ADDRESS and that the head node is up"
        ) from err


def connect(cfg: RayConfig, embedded_cpus: int | None = None, dashboard: bool = False) -> bool:
    """Join `ray.address` / $RAY_ADDRESS, or start a new embedded local Ray with `ray.num_cpus`,
    else `embedded_cpus`, else the CPUs the config's actors need (with its dashboard, and
    so the State API, where `dashboard`). True where this call joined a running cluster,
    which outlives this process; False where it started Ray (or Ray was already up)."""
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        check_reachable(address, cfg.connect_timeout_s)
        ray.init(address=address, log_to_driver=True)
        return True
    num_cpus = cfg.num_cpus or embedded_cpus or math.ceil(cfg.num_actors * cfg.cpus_per_actor)
    # "local": a new embedded Ray even where `ray start` left a cluster on this machine
    # (a bare `ray.init()` would join it, and refuse num_cpus).
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=True)
    return False
