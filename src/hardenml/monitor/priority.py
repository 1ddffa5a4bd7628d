"""CPU priority of the service's background processes (the telemetry writer, the detectors).

A lower niceness alone was not enough on 2 cores (`bench/monitor.py`). Linux's scheduler
(EEVDF, since 6.6) lets a running nice-5 process finish its slice before a process that
just woke up gets the core, so a client reading its answer, or the service taking the next
request, could wait a millisecond or more behind the writer. Under SCHED_IDLE a process
runs only on CPU time that no other process wants and leaves the core as soon as a normal
process wakes on it. Measured with one neighbour job on the other core (four quick runs of
`bench/monitor.py`, alternated): the service's own part of a request's round trip (the
round trip minus the model's time) at the 99th percentile was 9.7 and 10.4 ms with the
writer at nice 5 and the detectors at nice 10, and 4.7 and 5.5 ms with both idle. On a
quiet machine the difference was within the runs' spread (bench/README.md).

The price: a process under SCHED_IDLE gets almost nothing while every core is busy with
normal work. So whoever waits on it (the writer's report reader, the watch waiting for a
judgement) calls `raise_to_normal` once it has waited too long: the process goes back to
the normal policy at its niceness. Linux lets a process leave SCHED_IDLE only within
RLIMIT_NICE (or with CAP_SYS_NICE); where that is refused, the caller logs it once and
the work goes on at the idle priority (the writer's backlog metric shows it falling
behind; `idle_priority = false` in the config avoids it).
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("hardenml.monitor")


def idle_supported() -> bool:
    """Whether this platform has SCHED_IDLE (Linux)."""
    return hasattr(os, "SCHED_IDLE") and hasattr(os, "sched_setscheduler")


def lower_this_process(niceness: int, *, idle: bool) -> None:
    """Raise the calling process's niceness by `niceness` (0: unchanged) and, when `idle`
    and the platform has it, move it to SCHED_IDLE."""
    with contextlib.suppress(OSError):
        os.nice(niceness)
    if idle and idle_supported():
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            log.warning("could not move a background process to SCHED_IDLE (%s)", exc)


def raise_to_normal(pid: int, niceness: int) -> bool:
    """Move process `pid` from SCHED_IDLE back to the normal policy at `niceness`. True
    when it runs under the normal policy afterwards (also when it already did)."""
    if not idle_supported():
        return True
    try:
        if os.sched_getscheduler(pid) != os.SCHED_IDLE:
            return True
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except OSError:
        return False
    return True


def describe(pid: int) -> str:
    """How process `pid` is scheduled: "idle", or "nice N" (N its niceness)."""
    try:
        if idle_supported() and os.sched_getscheduler(pid) == os.SCHED_IDLE:
            return "idle"
        return f"nice {os.getpriority(os.PRIO_PROCESS, pid)}"
    except OSError:
        return "unknown"
