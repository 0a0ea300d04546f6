"""How late the event loop runs what is ready: `concert_event_loop_lag_seconds`.

Every call of a process is served by one event loop. When something holds it
(a CPU-bound step, a storm of calls, a GIL held elsewhere), every call waits,
whatever its own cost; per-method latency shows that only blurred. A sampler
asks the loop to wake it after a fixed pause and records how much later than
asked it woke. Under a junk storm this told apart a loop that is saturated
(lag near the calls' latency) from one that is not (lag of a few ms while
the calls wait elsewhere: the host's CPU, the transport).
"""

from __future__ import annotations

import asyncio

from prometheus_client import Histogram

# Often enough to catch a stall of a few ms; cheap (one timer per interval).
SAMPLE_SECONDS = 0.1
# From "nothing waits" to "every call misses its deadline".
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


async def sample_loop_lag(histogram: Histogram, interval: float = SAMPLE_SECONDS) -> None:
    """Record the loop's lateness into histogram until cancelled (a background task)."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - asked))
