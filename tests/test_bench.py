"""`make bench` end to end in a reduced form: bench/run with every
workload at a small scale, against the real stack. It checks that the
benchmark works and reports what it measured (outputs exist, parse, figures
are positive), never how fast anything is: there are no thresholds.

The benchmark deletes every node of the stack's Neo4j between its runs, so
the test is marked stack_last and runs after every other test. Standard
library and pytest only; the plot needs python3-matplotlib (tests/run
installs it)."""
import csv
import json
import os
import subprocess
import sys

import pytest

from nexus import ROOT  # noqa: E402 (the one definition)


@pytest.mark.stack_last
def test_0001_bench_reduced_end_to_end(stack, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ)
    env.pop("NEXUS_BENCH_NEO4J_CONNECTOR", None)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run"), "--scale", "0.001",
                        "--instances", "1,2", "--verify-sink", "--latency-rates", "500,2000", "--latency-seconds", "1",
                        "--out", str(out)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "connector was not available" in p.stdout

    res = json.loads((out / "results.json").read_text())
    runs = res["runs"]
    seen = {(r["workload"], r["system"], r["instances"] if r["system"] == "nexus-sync" else 0) for r in runs}
    for want in [("W1", "ceiling", 0), ("W1", "nexus-sync", 1), ("W1", "nexus-sync", 2),
                 ("W2", "ceiling", 0), ("W2", "nexus-sync", 1), ("W3", "ceiling", 0), ("W3", "nexus-sync", 1)]:
        assert want in seen, (want, seen)
    assert not any(r["system"] == "connector" for r in runs)
    for r in runs:
        assert r["events"] > 0 and r["drain_s"] > 0 and r["events_per_s"] > 0, r
        if r["system"] == "nexus-sync":
            assert r["neo4j_transactions"] > 0, r
            workers = [v for k, v in r["processes"].items() if k.startswith("worker")]
            assert len(workers) == r["instances"] * len({k.split()[1] for k in r["processes"]
                                                         if k.startswith("worker")}), r
            assert all(w["peak_rss_mb"] > 0 and w["cpu_s"] >= 0 for w in workers), r
    assert {r["workload"] for r in res["ratios"]} == {"W1", "W2", "W3"}
    assert all(r["nexus_over_ceiling"] > 0 and r["nexus_over_connector"] is None for r in res["ratios"])
    # the connector's Cypher strategy, emulated, gives the workers' graph
    assert [(c["workload"], c["equal"]) for c in res["sink_cypher_check"]] == \
        [("W1", True), ("W2", True), ("W3", True)]
    lat = res["latency"]
    assert [(r["system"], r["rate"]) for r in lat] == [("nexus-sync", 500), ("nexus-sync", 2000)]
    for r in lat:
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"], r
        assert r["rows"] == r["rate"] and r["poll_period_mean_ms"] > 0, r
        # where the time went, from the worker's stage histogram: every
        # stage saw at least the rows of this rate, and the means add up
        # to no more than the measured end-to-end worst case
        assert set(r["stages"]) == {"capture", "kafka", "worker", "neo4j"}, r
        assert all(v["changes"] >= r["rows"] and v["mean_ms"] >= 0 for v in r["stages"].values()), r
        assert sum(v["mean_ms"] for v in r["stages"].values()) <= r["max_ms"] + 1, r

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["kind"] for r in rows} == {"throughput", "process", "latency"}
    assert all(float(r["value"]) >= 0 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "nexus/connector" in summary and "nexus/ceiling" in summary
    assert "Where the time goes" in summary
    ceilings = [r for r in runs if r["system"] == "ceiling"]
    assert all(len(r["passes_s"]) == 2 and r["drain_s"] == min(r["passes_s"]) for r in ceilings), ceilings
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
