"""Where a server's time goes during one measured stream (`bench_api --profile DIR`).

py-spy samples every thread of `xmodal-serve` (without pausing it) while the stream runs;
each sample of a request worker thread is charged to the innermost query stage on its
stack (`STAGES`), each sample of the event-loop thread to "event loop". Dividing by the
sampling rate and the requests sent gives milliseconds per request: what the server's
threads spent, stage by stage, next to the latency the client saw. A thread that waits
for the GIL counts as busy (py-spy sees it running), so the two threads' columns can
add up to more than the wall time when they contend.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

RATE_HZ = 250
# (stage, a frame that marks it); a sample goes to the innermost marker on its stack
STAGES = [
    ("encode", "Searcher.query_vector "),
    ("ann", "search_space "),
    ("fusion (sibling scores)", "_fuse_found "),
    ("owner map (SQL stamp)", "OwnerMap.current "),
    ("filters (allowed ids)", "allowed_ids "),
    ("page (SQL join)", "Searcher._page "),
    ("keyword", "_keyword_rankings "),
    ("hybrid fusion", "fuse (search/hybrid.py"),
    ("hybrid fusion", "_hits (search/hybrid.py"),
    ("facets", "count_facets "),
    ("request -> query", "query_parts "),
    ("response model", "search_response "),
]
# A request's threads: AnyIO's worker, and a thread pool's task (a hybrid query's vector
# side runs on one while the worker runs its keyword side, search.hybrid).
WORKERS = ("WorkerThread.run ", "_WorkItem.run (concurrent/futures/thread.py")
EVENT_LOOP = "event loop (HTTP, validation, serialisation)"
OTHER_WORKER = "worker, other"


@dataclass
class Profile:
    """Samples per stage of one stream, and how to turn them into ms per request."""

    samples: Counter = field(default_factory=Counter)
    rate_hz: int = RATE_HZ

    def ms_per_request(self, requests: int) -> dict[str, float]:
        scale = 1000 / self.rate_hz / max(requests, 1)
        return {stage: round(n * scale, 2) for stage, n in self.samples.most_common()}


def stage_of(frames: list[str]) -> str | None:
    """The stage one sampled stack belongs to (frames root first); None: not serving."""
    if not any(f.startswith(WORKERS) for f in frames):
        return EVENT_LOOP if any("asyncio" in f or "uvicorn" in f for f in frames) else None
    for frame in reversed(frames):
        for stage, marker in STAGES:
            if marker in frame:
                return stage
    return OTHER_WORKER


def read_raw(path: Path) -> Profile:
    """py-spy's `--format raw` output: one `frame;frame;... count` line per stack."""
    profile = Profile()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stage = stage_of(stack.split(";"))
        if stage is not None:
            profile.samples[stage] += int(count)
    return profile


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy (in the dev dependencies: `make install`)")
    return found


@contextmanager
def sampled(pid: int, raw: Path) -> Iterator[None]:
    """Sample process `pid` (and its children) into `raw` while the block runs."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--subprocesses",
                            "--nonblocking", "--format", "raw", "--rate", str(RATE_HZ),
                            "--output", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, err = spy.communicate(timeout=60)
        if spy.returncode not in (0, -signal.SIGINT) and not raw.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
