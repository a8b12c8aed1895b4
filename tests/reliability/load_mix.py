"""The mixed-load harness of tests/reliability/test_load.py (asyncio + httpx on loopback).

Readers run the whole time. Writers (PUT, then DELETE of an older item) are switched on
and off in alternating windows, and the index version switch (`xmodal-index reindex` in
another process) runs inside a writing window. Every search is tagged with the window it
ran in, so "reads alone" and "reads under writes" are measured interleaved, under the
same machine: on a shared host the other tenants' load lands on both sides alike.

Each window also accounts CPU time (Linux /proc, in seconds): the server's, ours, and the
rest of the machine's ("foreign"), so a slow run can be told apart from a busy host.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx

from tests.api.conftest import WRITE
from tests.reliability.storage_checks import png
from tests.utils.corpus import catalog_items

BASE_ITEMS = catalog_items(60)
BASE_IDS = {i.external_id for i in BASE_ITEMS}
_TICK = os.sysconf("SC_CLK_TCK")


class Phase(StrEnum):
    READS = "reads"  # readers only: the unloaded reference, interleaved
    MIXED = "mixed"  # readers + writers (+ the version switch, once)


@dataclass
class Ledger:
    """When each churn item existed: created (PUT sent) and deleted (DELETE acknowledged).
    A query that overlaps an unacknowledged write may see either state; one that starts
    after a DELETE was acknowledged must not see the item (that is a torn read)."""

    created: dict[str, float] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)  # PUT sent, not yet acknowledged

    def existed_during(self, external_id: str, start: float) -> bool:
        """Whether a hit may name this item: a base item, or a churn item whose PUT was
        sent and whose DELETE was not acknowledged before the query started."""
        if external_id in BASE_IDS:
            return True
        if external_id in self.created or external_id in self.in_flight:
            return self.deleted.get(external_id, float("inf")) >= start
        return False

    def observe(self, op: str, seconds: float) -> None:
        self.samples.setdefault(op, []).append(seconds)


def process_cpu_s(pid: int | str = "self", children: bool = False) -> float:
    """User + system CPU seconds of a process (its threads included), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # reaped children (the reindex run)
    return ticks / _TICK


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every core), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


@dataclass
class CpuWindow:
    """CPU seconds spent during the windows of one phase."""

    wall: float = 0.0
    machine: float = 0.0
    server: float = 0.0
    ours: float = 0.0  # this process and its reaped children

    @property
    def foreign_cores(self) -> float:
        """Cores the rest of the machine kept busy on average: the host's noise."""
        return max(0.0, self.machine - self.server - self.ours) / max(self.wall, 1e-9)


@dataclass
class Windows:
    """Which phase is on. `epoch` moves at every change, so a search that saw two
    phases is counted in neither."""

    server_pid: int
    seconds: float
    window_s: float
    epoch: int = 0
    phase: Phase = Phase.READS
    writes_on: asyncio.Event = field(default_factory=asyncio.Event)
    writer_waiting: bool = False  # the writer sits at its gate (no request in flight)
    done: bool = False
    cpu: dict[Phase, CpuWindow] = field(default_factory=lambda: {p: CpuWindow() for p in Phase})
    by_phase: dict[Phase, Ledger] = field(default_factory=lambda: {p: Ledger() for p in Phase})
    during_switch: Ledger = field(default_factory=Ledger)  # searches while reindex ran
    switch: Switch | None = None

    def _snapshot(self) -> tuple[float, float, float, float]:
        return (time.monotonic(), machine_busy_s(), process_cpu_s(self.server_pid),
                process_cpu_s(children=True))

    def _account(self, phase: Phase, before: tuple[float, ...]) -> None:
        after = self._snapshot()
        window = self.cpu[phase]
        window.wall += after[0] - before[0]
        window.machine += after[1] - before[1]
        window.server += after[2] - before[2]
        window.ours += after[3] - before[3]

    async def _enter(self, phase: Phase) -> tuple[float, ...]:
        if phase is Phase.READS:  # wait for the writer's request in flight to finish
            self.writes_on.clear()
            while not self.writer_waiting:
                await asyncio.sleep(0.005)
        else:
            self.writes_on.set()
        self.epoch += 1
        self.phase = phase
        return self._snapshot()

    async def drive(self, switch: Switch) -> None:
        """Alternate READS and MIXED windows until the time is up and the version switch
        (started in the first MIXED window after a third of the run) is served. The
        reindex process keeps running across windows of both kinds: like the host's
        other load it weighs on both, and `during_switch` keeps its searches apart."""
        until = time.monotonic() + self.seconds
        while time.monotonic() < until or switch.task is None or switch.running:
            for phase in (Phase.READS, Phase.MIXED):
                before = await self._enter(phase)
                if (phase is Phase.MIXED and switch.task is None
                        and time.monotonic() > until - self.seconds * 2 / 3):
                    switch.task = asyncio.ensure_future(switch.run())
                await asyncio.sleep(self.window_s)
                self._account(phase, before)
        self.done = True
        self.writes_on.set()  # release the writer so it can see `done`


@dataclass
class Switch:
    """`xmodal-index reindex` in another process, then wait until the server serves the
    new version (its refresher reopens the collection)."""

    base: str
    home: Path
    model: Path
    ledger: Ledger
    task: asyncio.Future | None = None
    seconds: float | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def run(self) -> None:
        start = time.monotonic()
        before = await versions(self.base)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "indexer.cli", "reindex", "--collection", "shop", "--home",
            str(self.home), "--json", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "XMODAL_MODEL": str(self.model), "XMODAL_DEVICE": "cpu",
                 "XMODAL_OFFLINE": "true"})
        _, err = await process.communicate()
        if process.returncode != 0:
            self.ledger.failures.append(f"reindex: {err.decode()[-500:]}")
        while await versions(self.base) == before and time.monotonic() < start + 120:
            await asyncio.sleep(0.1)
        if await versions(self.base) == before:
            self.ledger.failures.append("the server never switched to the new index version")
        self.seconds = time.monotonic() - start
        self.ledger.observe("version_switch", self.seconds)


async def versions(base: str) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        body = (await client.get("/v1/collections/shop")).json()
    return [index["version"] for index in body["indexes"]]


def query_bodies() -> list[dict]:
    texts = [{"collection": "shop", "text": t, "k": 10}
             for t in ("red fruit", "shoes", "blue toy", "kitchen", "green")]
    images = [{"collection": "shop", "image": base64.b64encode(png(i, 40)).decode(), "k": 10}
              for i in range(5)]
    return texts + images


async def reader(client: httpx.AsyncClient, ledger: Ledger, windows: Windows,
                 seed: int) -> None:
    bodies = query_bodies()
    i = seed
    while not windows.done:
        body = bodies[i % len(bodies)]
        i += 1
        op = "search_image" if "image" in body else "search_text"
        start, epoch = time.monotonic(), windows.epoch
        try:
            response = await client.post("/v1/search", json=body)
        except httpx.HTTPError as exc:
            ledger.failures.append(f"{op}: {exc!r}")
            continue
        end = time.monotonic()
        ledger.observe(op, end - start)
        if epoch == windows.epoch:  # the whole request ran in one phase
            windows.by_phase[windows.phase].observe(op, end - start)
        if windows.switch is not None and windows.switch.running:
            windows.during_switch.observe(op, end - start)
        if response.status_code != 200:
            ledger.failures.append(f"{op}: {response.status_code} {response.text[:200]}")
            continue
        for hit in response.json()["hits"]:
            if not ledger.existed_during(hit["external_id"], start):
                ledger.torn.append(hit["external_id"])


async def _gate(windows: Windows) -> None:
    if not windows.writes_on.is_set():
        windows.writer_waiting = True
        await windows.writes_on.wait()
        windows.writer_waiting = False


async def writer(client: httpx.AsyncClient, ledger: Ledger, windows: Windows) -> None:
    i = 0
    while True:
        await _gate(windows)
        if windows.done:
            return
        item = f"churn-{i}"
        body = {"text": f"red fruit churn {i}"}
        if i % 3 == 0:
            body["image"] = base64.b64encode(png(1000 + i, 40)).decode()
        ledger.in_flight.add(item)
        start = time.monotonic()
        response = await client.put(f"/v1/collections/shop/items/{item}", headers=WRITE,
                                    json=body)
        ledger.observe("put", time.monotonic() - start)
        ledger.in_flight.discard(item)
        if response.status_code not in (200, 201):
            ledger.failures.append(f"put: {response.status_code} {response.text[:200]}")
        ledger.created[item] = time.monotonic()
        if i >= 2:  # delete an older one: results must drop it at once
            await _gate(windows)
            old = f"churn-{i - 2}"
            start = time.monotonic()
            response = await client.delete(f"/v1/collections/shop/items/{old}", headers=WRITE)
            ledger.deleted[old] = time.monotonic()  # acknowledged: gone for later queries
            ledger.observe("delete", time.monotonic() - start)
            if response.status_code != 204:
                ledger.failures.append(f"delete: {response.status_code}")
        i += 1


def percentiles(values: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(values)
    return (round(1000 * statistics.median(ordered), 1),
            round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1))


@dataclass
class MixResult:
    ledger: Ledger  # every request of the run
    single: Ledger  # one reader alone, before the mix
    windows: Windows


async def run_mix(base: str, home: Path, model: Path, server_pid: int, seconds: float,
                  readers: int, window_s: float) -> MixResult:
    limits = httpx.Limits(max_connections=readers + 4)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        single = Ledger()
        windows = Windows(server_pid, max(2.0, seconds / 8), window_s)
        windows.phase = Phase.READS
        alone = asyncio.ensure_future(reader(client, single, windows, 0))
        await asyncio.sleep(windows.seconds)
        windows.done = True
        await alone
        ledger = Ledger()
        windows = Windows(server_pid, seconds, window_s)
        switch = windows.switch = Switch(base, home, model, ledger)
        tasks = [reader(client, ledger, windows, r) for r in range(readers)]
        tasks += [writer(client, ledger, windows), windows.drive(switch)]
        await asyncio.gather(*tasks)
    return MixResult(ledger, single, windows)
