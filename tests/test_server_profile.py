"""bench_api --profile: samples are charged to the innermost query stage, and py-spy
really samples a running process."""

import subprocess
import sys
import time

from tests.benchmarks.server_profile import EVENT_LOOP, OTHER_WORKER, read_raw, sampled

WORKER = ("Thread._bootstrap (threading.py:1002);WorkerThread.run "
          "(anyio/_backends/_asyncio.py:1124);_execute (api/routes/search.py:50);"
          "run (search/hybrid.py:73)")


def test_samples_go_to_the_innermost_stage(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join([
        f"{WORKER};Searcher.query_vector (search/engine.py:75);Session.run (x.py:1) 7",
        # the owner map is refreshed inside fusion: the inner stage wins
        f"{WORKER};_fuse_found (search/candidates.py:139);OwnerMap.current "
        "(search/catalog/owners.py:114) 3",
        f"{WORKER};_fuse_found (search/candidates.py:139);fuse (search/fusion.py:9) 2",
        f"{WORKER};fuse (search/hybrid.py:90);_rrf (search/hybrid.py:200) 1",
        f"{WORKER};something (elsewhere.py:1) 4",
        # a hybrid query's vector side, on a pool thread
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83);"
        "_WorkItem.run (concurrent/futures/thread.py:58);Searcher.vector_search "
        "(search/engine.py:47);search_space (search/candidates.py:257);x (y.py:1) 6",
        "Runner.run (asyncio/runners.py:118);RequestResponseCycle.send (uvicorn/x.py:1) 5",
        "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982) 9",  # idle
        "a truncated line without a count",
    ]))
    profile = read_raw(raw)
    assert dict(profile.samples) == {"encode": 7, "owner map (SQL stamp)": 3,
                                     "fusion (sibling scores)": 2, "hybrid fusion": 1,
                                     OTHER_WORKER: 4, EVENT_LOOP: 5, "ann": 6}
    # 250 samples a second: 7 samples over 2 requests = 14 ms each
    assert profile.ms_per_request(2)["encode"] == 14.0


def test_sampled_records_a_running_process(tmp_path):
    # no newline in the command line: py-spy writes it into every sample's line
    code = "import time\\nend = time.time() + 20\\ndef spin():\\n while time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", f"exec('{code}'); spin()"])
    raw = tmp_path / "raw.txt"
    try:
        with sampled(busy.pid, raw):
            time.sleep(1.5)
    finally:
        busy.kill()
        busy.wait()
    lines = raw.read_text().splitlines()
    assert any("spin" in line for line in lines)
    assert sum(int(line.rpartition(" ")[2]) for line in lines) > 50  # ~250 a second
