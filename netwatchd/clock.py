"""Clocks shared by the engines."""
import time


def boot_to_realtime_ns() -> int:
    """Offset from CLOCK_BOOTTIME (BPF timestamps) to wall-clock time."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
