"""Scaling by partitions: several instances of one worker binary in one
consumer group share the four partitions of its lane topic; workers joining
and leaving mid-stream lose nothing; SIGTERM finishes and commits the batch
in flight and exits within a bound, also during a Neo4j outage, and a
rebalance never commits what was not applied. Figures are printed (-s)."""
import json
import os
import re
import signal
import tempfile
import time
import uuid

import pytest

from nexus import (track, new_tags, Proxy, Worker, committed_offsets, run_tool, save_end_offsets,
                   wait_group_caught_up, wait_until)

TOPIC = "nexus.normal.tag"
SIGTERM_BOUND_S = 10.0

def at_end(nx, group):
    """Place a new group at the end of the tag lanes (their offsets now,
    read from Kafka), so it does not read the topic's whole history first
    and reads everything written after this call."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "end.json")
        save_end_offsets(nx, "tag", path)
        p = run_tool(nx, "nexus-replay", "--worker", "tag", "--group", group, "--from-file", path, "--execute")
    assert p.returncode == 0, p.stdout + p.stderr
    return group


def tag_worker(nx, tmp_path, group, sub, **env):
    env.setdefault("NEXUS_BATCH_MS", 20)
    w = Worker(nx, "tag", str(tmp_path / sub), group, **env)
    track(w)
    return w




def pg_state(nx, ids):
    rows = nx.rows("SELECT id, name, pg_version FROM tags WHERE id IN (" + ", ".join(f"'{i}'" for i in ids) + ")")
    return {r[0]: (r[1], int(r[2])) for r in rows}


def graph_state(nx, ids):
    rows = nx.cypher("MATCH (t:Tag) WHERE t.id IN $ids RETURN t.id AS id, t.name AS name, t.pgVersion AS v",
                     {"ids": ids})
    return {r["id"]: (r["name"], r["v"]) for r in rows}


def assert_graph_equals_pg(nx, ids):
    pg, graph = pg_state(nx, ids), graph_state(nx, ids)
    assert len(pg) == len(ids)
    missing = [i for i in ids if i not in graph]
    assert not missing, f"{len(missing)} of {len(ids)} tags missing from Neo4j"
    wrong = {i: (pg[i], graph[i]) for i in ids if pg[i] != graph[i]}
    assert not wrong, f"{len(wrong)} tags differ, e.g. {list(wrong.items())[:3]}"


def assignments(w):
    """Every assignment the worker logged, as lists of partitions."""
    out = []
    for line in w.log_text().splitlines():
        m = re.search(r"partitions assigned \(\d+\): (.*)$", line)
        if m:
            out.append(sorted(int(p) for p in re.findall(re.escape(TOPIC) + r"\[(\d+)\]", m.group(1))))
    return out


def stop_timed(w):
    t0 = time.time()
    w.proc.send_signal(signal.SIGTERM)
    rc = w.proc.wait(timeout=120)
    return rc, time.time() - t0


def create_offsets(nx, ids):
    """{tag id: (partition, offset)} of each tag's create event."""
    want, found = set(ids), {}
    for m in nx.consume_all(TOPIC, timeout=120):
        p = m.get("payload") or ""
        if '"op":"c"' not in p:
            continue
        try:
            tid = (json.loads(p).get("after") or {}).get("id")
        except ValueError:
            continue
        if tid in want:
            found[tid] = (m["partition"], m["offset"])
    return found


def assert_commits_were_applied(nx, group, ids):
    """Every create event below the group's committed offset is applied."""
    done = committed_offsets(nx, "tag", group)
    offs = create_offsets(nx, ids)
    graph = graph_state(nx, ids)
    below = [i for i, (p, o) in offs.items() if o < (done.get((TOPIC, p)) or 0)]
    unapplied = [i for i in below if i not in graph]
    assert not unapplied, f"{len(unapplied)} events committed but not applied"
    return len(below)


def test_three_workers_share_the_partitions_and_joins_and_leaves_lose_nothing(nx, project, tmp_path):
    group = at_end(nx, f"scale-{uuid.uuid4().hex[:8]}")
    env = dict(NEXUS_BATCH_MAX=50)
    ws = [tag_worker(nx, tmp_path, group, f"w{i}", **env) for i in range(3)]
    ids = []
    ws[0].start()
    wait_until(lambda: assignments(ws[0]), 120, what="first worker assigned")
    ids += new_tags(nx, project, 400, "a")
    # a second and a third worker join while the first is applying
    t_join = time.time()
    ws[1].start()
    wait_until(lambda: assignments(ws[1]), 120, what="second worker assigned")
    join_s = time.time() - t_join
    ids += new_tags(nx, project, 400, "b")
    ws[2].start()
    wait_until(lambda: assignments(ws[2]), 120, what="third worker assigned")
    nx.psql("UPDATE tags SET name = name || '-u' WHERE id IN (" + ", ".join(f"'{i}'" for i in ids[::3]) + ")")
    ids += new_tags(nx, project, 400, "c")
    # the first one leaves mid-stream
    wait_until(lambda: ws[0].total("consumed") > 0, 120, what="first worker busy")
    rc, leave_s = stop_timed(ws[0])
    assert rc == 0
    ids += new_tags(nx, project, 400, "d")
    nx.psql("UPDATE tags SET name = name || '-v' WHERE id IN (" + ", ".join(f"'{i}'" for i in ids[1::4]) + ")")
    nx.psql("DELETE FROM tags WHERE id IN (" + ", ".join(f"'{i}'" for i in ids[2::50]) + ")")
    deleted = ids[2::50]
    wait_group_caught_up(nx, "tag", group)
    survivors = [i for i in ids if i not in set(deleted)]
    assert_graph_equals_pg(nx, survivors)
    assert nx.cypher_value("MATCH (t:Tag) WHERE t.id IN $ids RETURN count(t)", {"ids": deleted}) == 0
    # the partitions were shared: with three members each had one or two
    for w in ws:
        got = assignments(w)
        assert got, f"{w.dir}: never assigned"
    shared = [a for w in ws for a in assignments(w) if 0 < len(a) < 4]
    assert shared, [assignments(w) for w in ws]
    last = [assignments(w)[-1] for w in ws[1:]]
    assert sorted(p for a in last for p in a) == [0, 1, 2, 3], last
    assert all(w.total("dlq") == 0 for w in ws[1:])
    for w in ws[1:]:
        rc, s = stop_timed(w)
        assert rc == 0 and s < SIGTERM_BOUND_S
    print(f"\nscale: 1600 tags through 3 workers; join to assignment {join_s:.1f} s, "
          f"SIGTERM exit {leave_s:.2f} s; assignments {[assignments(w) for w in ws]}")


def test_sigterm_finishes_and_commits_a_large_batch(nx, project, tmp_path):
    group = at_end(nx, f"scale-term-{uuid.uuid4().hex[:8]}")
    start = sum(v or 0 for v in committed_offsets(nx, "tag", group).values())
    # a large batch: 3000 new rows waiting, collected for up to 5 s
    ids = new_tags(nx, project, 3000, "big")
    wait_until(lambda: len(create_offsets(nx, ids)) == len(ids), 300, what="the tags in Kafka")
    w = tag_worker(nx, tmp_path, group, "big", NEXUS_BATCH_MAX=20000, NEXUS_BATCH_MS=5000).start()
    wait_until(lambda: assignments(w), 120, what="assignment")
    time.sleep(1.0)  # inside the 5 s collection window of the first batch
    rc, exit_s = stop_timed(w)
    assert rc == 0
    s = w.stats()
    # bounded by the one batch it had to finish
    assert exit_s < s["last_batch_ms"] / 1000 + SIGTERM_BOUND_S, (exit_s, s)
    assert s["batches"] >= 1, s
    consumed = w.total("consumed")
    assert consumed > 0, s
    done = committed_offsets(nx, "tag", group)
    # the batch in flight was applied and committed, all of it
    assert sum(v or 0 for v in done.values()) - start == consumed
    assert_commits_were_applied(nx, group, ids)
    assert "stopping: the last batch is committed" in w.log_text()
    w2 = tag_worker(nx, tmp_path, group, "rest").start()
    wait_group_caught_up(nx, "tag", group)
    assert w2.stop() == 0
    assert_graph_equals_pg(nx, ids)
    print(f"\nSIGTERM during a batch ({consumed} messages in {s['batches']} batches, the last "
          f"{s['last_batch_ms']:.0f} ms): exit after {exit_s:.2f} s, all committed")


def test_sigterm_during_an_outage_exits_in_time_and_commits_nothing_unapplied(nx, project, tmp_path):
    proxy = Proxy(nx.env["NEXUS_NEO4J_URL"].rsplit(":", 1)[1])
    group = at_end(nx, f"scale-outage-{uuid.uuid4().hex[:8]}")
    env = dict(NEXUS_NEO4J_URL=f"http://127.0.0.1:{proxy.port}")  # default backoff, up to 30 s
    try:
        w = tag_worker(nx, tmp_path, group, "a", **env).start()
        wait_group_caught_up(nx, "tag", group)
        before = committed_offsets(nx, "tag", group)
        proxy.cut()
        pending = new_tags(nx, project, 50, "outage")
        wait_until(lambda: (w.stats() or {}).get("neo4j_retries", 0) >= 3, 180, what="several retries")
        rc, exit_s = stop_timed(w)
        assert rc == 0
        assert exit_s < SIGTERM_BOUND_S, exit_s
        assert committed_offsets(nx, "tag", group) == before
        assert assert_commits_were_applied(nx, group, pending) == 0
        proxy.restore()
        w2 = tag_worker(nx, tmp_path, group, "b", **env).start()
        wait_group_caught_up(nx, "tag", group)
        assert_graph_equals_pg(nx, pending)
        rc, _ = stop_timed(w2)
        assert rc == 0
        print(f"\nSIGTERM during a Neo4j outage: exit after {exit_s:.2f} s, nothing committed")
    finally:
        proxy.close()


def test_rebalance_abandons_a_batch_it_could_not_apply(nx, project, tmp_path):
    """A worker whose batch waits for Neo4j loses half of its partitions to a
    worker that joins: it abandons the batch without committing, and the
    group still applies everything."""
    proxy = Proxy(nx.env["NEXUS_NEO4J_URL"].rsplit(":", 1)[1])
    group = at_end(nx, f"scale-rebal-{uuid.uuid4().hex[:8]}")
    stuck = tag_worker(nx, tmp_path, group, "stuck", NEXUS_NEO4J_URL=f"http://127.0.0.1:{proxy.port}",
                       NEXUS_RETRY_MAX_MS=2000)
    healthy = tag_worker(nx, tmp_path, group, "healthy")
    try:
        stuck.start()
        wait_group_caught_up(nx, "tag", group)
        before = committed_offsets(nx, "tag", group)
        proxy.cut()
        pending = new_tags(nx, project, 200, "rebal")
        wait_until(lambda: (stuck.stats() or {}).get("neo4j_retries", 0) >= 2, 180, what="batch stuck")
        t0 = time.time()
        healthy.start()
        wait_until(lambda: "abandoned a batch" in stuck.log_text(), 120, what="stuck worker abandons its batch")
        wait_until(lambda: assignments(healthy), 120, what="healthy worker assigned")
        rebalance_s = time.time() - t0
        mine = assignments(healthy)[-1]
        assert 0 < len(mine) < 4, mine
        # the healthy worker applies its partitions; the stuck one commits nothing
        offs = create_offsets(nx, pending)
        theirs = [i for i, (p, _) in offs.items() if p in mine]
        wait_until(lambda: len(graph_state(nx, theirs)) == len(theirs), 180, what="healthy partitions applied")
        assert assert_commits_were_applied(nx, group, pending) == len(theirs)
        done = committed_offsets(nx, "tag", group)
        for p in range(4):
            if p not in mine:
                assert done[(TOPIC, p)] == before[(TOPIC, p)], (p, done, before)
        proxy.restore()
        wait_group_caught_up(nx, "tag", group)
        assert_graph_equals_pg(nx, pending)
        for w in (stuck, healthy):
            rc, _ = stop_timed(w)
            assert rc == 0
        print(f"\nrebalance with a batch in flight: abandoned and reassigned in {rebalance_s:.1f} s")
    finally:
        proxy.close()
