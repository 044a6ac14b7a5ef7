"""Peak resident memory of this process alone.

`getrusage().ru_maxrss` survives `execve` on Linux, so a child started by a large
parent would report the parent's peak; `VmHWM` belongs to the new address space.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
