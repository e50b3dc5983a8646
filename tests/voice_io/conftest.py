"""Every voice I/O test runs on trio's virtual clock (``autojump_clock``).

The tests measure fades, ducking, gaps and stalls in 20 ms frames; on the virtual clock those
durations are decided by the code, not by how loaded the machine is, and the seconds they wait
cost no real time. clank and the sandbox talk over loopback sockets (HTTP, websockets, UDP),
whose delivery is immediate, and CPU work runs inline under a virtual clock (clank.io.offload).
"""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture(autouse=True)
def _virtual_time(autojump_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    return autojump_clock
