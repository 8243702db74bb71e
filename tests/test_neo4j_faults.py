"""Neo4j errors a real server cannot be made to give on demand, injected by
the HTTP fault proxy of tests/faultproxy.py between a tag worker and Neo4j
(NEXUS_NEO4J_URL points at the proxy, on an ephemeral loopback port): a
deadlock and a cluster leader switch are retried, never dead-lettered, and
the rows end applied and written back as SUCCESS; a batch whose every
change fails alike is retried rather than dead-lettered whole.

The first two place their consumer group at the lane offsets of the moment
(read from Kafka), let the worker apply one warm-up tag through the proxy
(so the start-up constraint statements are done), then arm the rule and
write the tags they check: every injected answer falls on a batch."""
import re
import socket
import time
import urllib.request
import uuid

import pytest

from faultproxy import FaultProxy
from nexus import (Worker, end_offsets, new_tags, run_tool, save_end_offsets, scratch_lanes, stop_worker,
                   tags_applied, track, wait_until)

COMMIT = r"^/db/[^/]+/tx/commit$"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def neo4j_retries(port):
    """nexus_retries_total{target="neo4j"} from the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^nexus_retries_total\{[^}]*target="neo4j"[^}]*\} (\d+)$', text, re.M)
    assert m, "no nexus_retries_total{target=\"neo4j\"} in /metrics"
    return int(m.group(1))


def synced(nx, ids):
    return int(nx.scalar("SELECT count(*) FROM tags WHERE sync_status = 'SUCCESS' AND id IN (" +
                         ", ".join(f"'{i}'" for i in ids) + ")"))


def never_failed(nx, ids):
    return nx.scalar("SELECT count(*) FROM tags WHERE sync_attempts > 0 AND id IN (" +
                     ", ".join(f"'{i}'" for i in ids) + ")") == "0"


def dlq_end(nx):
    return sum(end_offsets(nx, ["nexus.dlq"]).values())


def retried_not_dead_lettered(nx, project, tmp_path, code, n):
    """The scenario of this module with the first n commits after the
    warm-up answered with the Neo4j error code."""
    group = f"faults-{uuid.uuid4().hex[:8]}"
    start = str(tmp_path / "start.json")
    save_end_offsets(nx, "tag", start)
    p = run_tool(nx, "nexus-replay", "--worker", "tag", "--group", group, "--from-file", start, "--execute")
    assert p.returncode == 0, p.stdout + p.stderr
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    port = free_port()
    w = track(Worker(nx, "tag", str(tmp_path / "w"), group, NEXUS_NEO4J_URL=proxy.url, NEXUS_RETRY_MAX_MS=500,
                     NEXUS_BATCH_MS=20, NEXUS_METRICS_PORT=port, NEXUS_METRICS_BIND="127.0.0.1"))
    try:
        w.start()
        warm = new_tags(nx, project, 1, f"warm-{code.rsplit('.', 1)[1]}")
        wait_until(lambda: synced(nx, warm) == 1, 120, what="the warm-up tag applied and written back")
        retries0, dlq0 = neo4j_retries(port), dlq_end(nx)
        rule = proxy.add_rule("POST", COMMIT, n, code=code)
        ids = new_tags(nx, project, 5, f"fault-{code.rsplit('.', 1)[1]}")
        wait_until(lambda: rule.served == n, 120, what=f"{n} injected {code} answers")
        wait_until(lambda: synced(nx, ids) == 5, 120, what="the tags applied and written back")
        w.wait_caught_up(timeout=120)
        assert tags_applied(nx, ids) == 5
        assert never_failed(nx, ids)
        assert neo4j_retries(port) - retries0 >= n
        assert dlq_end(nx) == dlq0, "a dead letter for an error that asked for a retry"
        assert w.total("dlq") == 0
        assert f"could not commit to Neo4j: {code}: injected by tests/faultproxy.py" in w.log_text()
        assert w.proc.poll() is None
    finally:
        w.stop()
        proxy.close()


def test_injected_deadlock_is_retried(nx, project, tmp_path):
    """Neo.TransientError.Transaction.DeadlockDetected, the answer two
    writers locking the same nodes can get (tests/test_chaos.py provokes it
    for real, when timing allows), for the next 3 commits: each is retried
    with backoff (log line, nexus_retries_total{target="neo4j"} +3), nothing
    goes to nexus.dlq, and the rows end applied with sync_status SUCCESS.
    Injected by tests/faultproxy.py: a real deadlock cannot be ordered."""
    retried_not_dead_lettered(nx, project, tmp_path, "Neo.TransientError.Transaction.DeadlockDetected", 3)


def test_injected_not_a_leader_is_retried(nx, project, tmp_path):
    """Neo.ClientError.Cluster.NotALeader, what a cluster member answers a
    write during a leader switch, for the next 4 commits: a ClientError, yet
    not the event's fault, so it is retried like a transient error and
    nothing is dead-lettered (it once split the batch and dead-lettered the
    changes the switch caught). Injected by tests/faultproxy.py: the local
    stack runs one Neo4j, not a cluster."""
    retried_not_dead_lettered(nx, project, tmp_path, "Neo.ClientError.Cluster.NotALeader", 4)


def test_a_split_batch_failing_alike_is_retried_not_dead_lettered(nx, project, tmp_path):
    """Three real tag events in one batch on a scratch topic; Neo4j answers
    the batch and then each change alone with the same permanent code
    (Neo.ClientError.Statement.SyntaxError): no three events are that
    uniformly bad, the statements or the server are, so the batch is
    retried (it then commits) instead of dead-lettering all three.
    Injected by tests/faultproxy.py on the requests carrying these tags'
    ids (4: the batch and its three singles), so the worker's start-up
    statements pass untouched."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    code = "Neo.ClientError.Statement.SyntaxError"
    w = track(Worker(nx, "tag", str(tmp_path / "w"), f"faults-alike-{uuid.uuid4().hex[:8]}",
                     NEXUS_NEO4J_URL=proxy.url, NEXUS_RETRY_MAX_MS=500, NEXUS_BATCH_MS=2000,
                     NEXUS_MAPPING=mapping))
    ids = new_tags(nx, project, 3, "alike")
    try:
        events = []
        for tid in ids:
            m = wait_until(lambda: [m for m in nx.consume_all("nexus.normal.tag")
                                    if m.get("payload") and f'"id":"{tid}"' in m["payload"]], 120,
                           what="real tag event")[0]
            events.append((m["key"], m["payload"]))
        for key, value in events:
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        rule = proxy.add_rule("POST", COMMIT, 4, code=code, match_body="|".join(ids))
        w.start()
        wait_until(lambda: tags_applied(nx, ids) == 3, 120, what="the tags applied")
        wait_until(lambda: synced(nx, ids) == 3, 120, what="the tags written back")
        w.wait_caught_up(timeout=120)
        assert rule.served == 4
        log = w.log_text()
        assert "batch of 3 changes rejected by Neo4j, applying them one by one" in log
        assert "all 3 changes rejected alike, retrying the batch" in log
        assert never_failed(nx, ids)
        assert nx.consume_all(f"{prefix}.dlq") == []
        assert w.total("dlq") == 0
    finally:
        w.stop()
        proxy.close()
        cleanup()


def test_events_failing_alike_for_good_are_dead_lettered_not_retried_for_ever(nx, project, tmp_path):
    """Three real tag events that Neo4j rejects for good, alike
    (SyntaxError injected on every request that carries them), while it
    commits everything else: retried as the environment's fault first,
    then, after retry.poison_after (2 here) identical answers, a forced
    split whose canary (RETURN 1) commits, so the three are dead-lettered
    and the tag written after them is applied: the partition moves.
    Before: retried for ever, the partition held. Scratch topic; injected
    by tests/faultproxy.py."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    w = track(Worker(nx, "tag", str(tmp_path / "w"), f"faults-canary-{uuid.uuid4().hex[:8]}",
                     NEXUS_NEO4J_URL=proxy.url, NEXUS_RETRY_MAX_MS=200, NEXUS_RETRY_POISON_AFTER=2,
                     NEXUS_BATCH_MS=2000, NEXUS_MAPPING=mapping))
    ids = new_tags(nx, project, 4, "canary")
    bad, after = ids[:3], ids[3]
    try:
        events = {}
        for tid in ids:
            m = wait_until(lambda: [m for m in nx.consume_all("nexus.normal.tag")
                                    if m.get("payload") and f'"id":"{tid}"' in m["payload"]], 120,
                           what="real tag event")[0]
            events[tid] = (m["key"], m["payload"])
        proxy.add_rule("POST", COMMIT, None, code="Neo.ClientError.Statement.SyntaxError",
                       match_body="|".join(bad))
        for tid in bad:
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", events[tid][0], input=events[tid][1])
        w.start()
        dead = wait_until(lambda: (lambda d: d if len(d) >= 3 else None)(nx.consume_all(f"{prefix}.dlq")),
                          180, what="the three dead letters")
        assert sorted(next(t for t in bad if f'"id":"{t}"' in d["payload"]) for d in dead) == sorted(bad)
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", events[after][0], input=events[after][1])
        wait_until(lambda: tags_applied(nx, [after]) == 1, 120, what="the tag after them applied")
        log = w.log_text()
        assert "all 3 changes rejected alike, retrying the batch" in log, log[-3000:]
        assert "all 3 changes rejected alike, but Neo4j runs other statements" in log, log[-3000:]
        assert tags_applied(nx, bad) == 0
    finally:
        w.stop()
        proxy.close()
        cleanup()


def test_a_poison_pill_is_split_out_and_dead_lettered(nx, project, tmp_path):
    """A proxy in front of Neo4j answers every request that carries one
    tag's id with HTTP 400 and no Neo4j code (a gateway's request filter):
    the same failure, word for word, on every retry. After
    retry.poison_after (2 here) identical failures the batch is the cause:
    it is split, the two good tags commit, the poison one goes to the DLQ
    with the proxy's answer as its reason and its row is FAILED. Without
    the rule the worker would retry the batch forever with its partition
    paused. Real tag events, on a scratch topic; injected by
    tests/faultproxy.py."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    w = track(Worker(nx, "tag", str(tmp_path / "w"), f"faults-poison-{uuid.uuid4().hex[:8]}",
                     NEXUS_NEO4J_URL=proxy.url, NEXUS_RETRY_MAX_MS=300, NEXUS_BATCH_MS=2000,
                     NEXUS_RETRY_POISON_AFTER=2, NEXUS_MAPPING=mapping))
    ids = new_tags(nx, project, 3, "poison")
    poison, good = ids[0], ids[1:]
    try:
        events = []
        for tid in ids:
            m = wait_until(lambda: [m for m in nx.consume_all("nexus.normal.tag")
                                    if m.get("payload") and f'"id":"{tid}"' in m["payload"]], 120,
                           what="real tag event")[0]
            events.append((m["key"], m["payload"]))
        for key, value in events:
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        rule = proxy.add_rule("POST", COMMIT, None, status=400, body="request blocked by the gateway",
                              content_type="text/plain", match_body=poison)
        w.start()
        wait_until(lambda: tags_applied(nx, good) == 2, 120, what="the good tags applied")
        dead = wait_until(lambda: nx.consume_all(f"{prefix}.dlq"), 120, what="a dead letter")
        assert len(dead) == 1, dead
        hdrs = dict(zip(dead[0]["headers"][0::2], dead[0]["headers"][1::2]))
        assert f'"id":"{poison}"' in dead[0]["payload"]
        assert "HTTP 400" in hdrs["nexus.reason"], hdrs
        wait_until(lambda: nx.scalar(f"SELECT sync_status FROM tags WHERE id = '{poison}'") == "FAILED", 60,
                   what="the poison row FAILED")
        wait_until(lambda: synced(nx, good) == 2, 60, what="the good rows written back")
        assert tags_applied(nx, [poison]) == 0
        log = w.log_text()
        assert "the same failure 2 times in a row" in log, log[-3000:]
        # the batch, two retries, then the split: one request per change
        assert rule.served >= 3
    finally:
        w.stop()
        proxy.close()
        cleanup()


def test_kafka_is_served_during_a_long_split(nx, project, tmp_path):
    """A batch of 25 real tag events, one of which Neo4j rejects for good
    (Neo.ClientError.Statement.SyntaxError injected on the requests that
    carry it), is split into 25 single transactions on a server made slow
    (the proxy waits 0.6 s before forwarding each request): 15 s of split,
    past max.poll.interval.ms (10 s here, the least librdkafka allows with
    the worker's 10 s session). The worker serves Kafka between the single
    transactions, so it keeps its partitions: no poll-interval error, no
    rebalance, the 24 good tags commit and the bad one is dead-lettered.
    Scratch topics; injected by tests/faultproxy.py."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    cfg = tmp_path / "worker.cfg"
    cfg.write_text('kafka = ( ["max.poll.interval.ms", "10000"] );\n')
    w = track(Worker(nx, "tag", str(tmp_path / "w"), f"faults-split-{uuid.uuid4().hex[:8]}",
                     args=("--config", str(cfg)), NEXUS_NEO4J_URL=proxy.url, NEXUS_BATCH_MS=3000,
                     NEXUS_MAPPING=mapping))
    ids = new_tags(nx, project, 25, "longsplit")
    bad, good = ids[0], ids[1:]
    try:
        wanted = set(ids)
        events = {}
        for m in wait_until(lambda: (lambda ms: ms if len(ms) >= len(ids) else None)(
                [m for m in nx.consume_all("nexus.normal.tag")
                 if m.get("payload") and any(f'"id":"{t}"' in m["payload"] for t in wanted)]),
                120, what="the real tag events"):
            tid = next(t for t in wanted if f'"id":"{t}"' in m["payload"])
            events.setdefault(tid, (m["key"], m["payload"]))
        for tid in ids:
            key, value = events[tid]
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        w.start()
        wait_until(lambda: "consuming as group" in w.log_text(), 120, what="the worker to start")
        proxy.add_rule("POST", COMMIT, None, code="Neo.ClientError.Statement.SyntaxError", match_body=bad)
        proxy.forward_delay_s = 0.6
        wait_until(lambda: tags_applied(nx, good) == len(good), 180, what="the good tags applied")
        dead = wait_until(lambda: nx.consume_all(f"{prefix}.dlq"), 60, what="the dead letter")
        assert len(dead) == 1 and f'"id":"{bad}"' in dead[0]["payload"], dead
        log = w.log_text()
        assert "applying them one by one" in log
        assert "maximum poll interval" not in log, log[-3000:]
        assert "partitions revoked" not in log and "partitions lost" not in log, log[-3000:]
    finally:
        w.stop()
        proxy.close()
        cleanup()


def test_a_long_split_stops_at_once_when_asked(nx, project, tmp_path):
    """SIGTERM in the middle of a long split: the worker stops between two
    single transactions, not after all of them, commits nothing of the
    batch, and the next start applies it whole: every good tag, one dead
    letter for the bad one. 30 real tag events on a scratch topic, one
    rejected for good (SyntaxError injected on the requests that carry
    it), on a server made slow (the proxy waits 1.5 s before each request):
    the split would take 45 s. Injected by tests/faultproxy.py."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    group = f"faults-stop-{uuid.uuid4().hex[:8]}"
    w = track(Worker(nx, "tag", str(tmp_path / "w"), group, NEXUS_NEO4J_URL=proxy.url,
                     NEXUS_BATCH_MS=3000, NEXUS_MAPPING=mapping))
    ids = new_tags(nx, project, 30, "stopsplit")
    bad, good = ids[0], ids[1:]
    try:
        wanted = set(ids)
        events = {}
        for m in wait_until(lambda: (lambda ms: ms if len(ms) >= len(ids) else None)(
                [m for m in nx.consume_all("nexus.normal.tag")
                 if m.get("payload") and any(f'"id":"{t}"' in m["payload"] for t in wanted)]),
                120, what="the real tag events"):
            tid = next(t for t in wanted if f'"id":"{t}"' in m["payload"])
            events.setdefault(tid, (m["key"], m["payload"]))
        proxy.add_rule("POST", COMMIT, None, code="Neo.ClientError.Statement.SyntaxError", match_body=bad)
        w.start()
        wait_until(lambda: "consuming as group" in w.log_text(), 120, what="the worker to start")
        proxy.forward_delay_s = 1.5
        for tid in ids:
            key, value = events[tid]
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        wait_until(lambda: "applying them one by one" in w.log_text() and tags_applied(nx, good) >= 2,
                   180, what="the split under way")
        t0 = time.monotonic()
        rc = stop_worker(w.proc, timeout=60)
        stop_s = time.monotonic() - t0
        applied = tags_applied(nx, good)
        log = w.log_text()
        # one transaction in flight (1.5 s) and the shutdown, not the 40 s left
        assert rc == 0 and stop_s < 15, (rc, stop_s, log[-3000:])
        assert applied < len(good), f"the split ran to its end ({applied}); stopped after {stop_s:.1f}s"
        assert "stopped applying 30 changes one by one" in log, log[-3000:]
        assert not nx.consume_all(f"{prefix}.dlq", timeout=3)
        print(f"stopped {stop_s:.1f}s after SIGTERM, {applied} of {len(good)} good tags applied alone")
        proxy.forward_delay_s = 0
        w.start()
        wait_until(lambda: tags_applied(nx, good) == len(good), 180, what="the good tags applied")
        dead = wait_until(lambda: nx.consume_all(f"{prefix}.dlq"), 60, what="the dead letter")
        w.wait_caught_up()
        dead = nx.consume_all(f"{prefix}.dlq", timeout=3)
        assert len(dead) == 1 and f'"id":"{bad}"' in dead[0]["payload"], dead
    finally:
        w.stop()
        proxy.close()
        cleanup()


@pytest.mark.parametrize("rule", [
    {"code": "Neo.ClientError.Cluster.NotALeader"},
    {"code": "Neo.DatabaseError.General.UnknownError"},
    {"status": 503, "body": "<html>upstream unavailable</html>", "content_type": "text/html"},
], ids=["not-a-leader", "database-error", "gateway-503"])
def test_a_repeated_server_state_is_never_a_poison_pill(nx, project, tmp_path, rule):
    """A batch of one event meets the same answer many more times than
    retry.poison_after (2 here), but the answer names the server's state
    (a leader switch that lasts, a database error) or says nothing about
    the request (a gateway's 503): that is not the event's fault, so it is
    retried, never dead-lettered, and applied once the condition ends.
    Real tag event, scratch topic; injected by tests/faultproxy.py."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    w = track(Worker(nx, "tag", str(tmp_path / "w"), f"faults-state-{uuid.uuid4().hex[:8]}",
                     NEXUS_NEO4J_URL=proxy.url, NEXUS_RETRY_MAX_MS=200, NEXUS_RETRY_POISON_AFTER=2,
                     NEXUS_MAPPING=mapping))
    (tid,) = new_tags(nx, project, 1, f"state-{uuid.uuid4().hex[:8]}")
    try:
        m = wait_until(lambda: [m for m in nx.consume_all("nexus.normal.tag")
                                if m.get("payload") and f'"id":"{tid}"' in m["payload"]], 120,
                       what="real tag event")[0]
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", m["key"], input=m["payload"])
        r = proxy.add_rule("POST", COMMIT, None, match_body=tid, **rule)
        w.start()
        wait_until(lambda: r.served >= 8, 120, what="eight identical answers")
        assert "the same failure" not in w.log_text()
        proxy.clear()
        wait_until(lambda: tags_applied(nx, [tid]) == 1, 120, what="the tag applied")
        wait_until(lambda: synced(nx, [tid]) == 1, 60, what="the tag written back")
        assert nx.consume_all(f"{prefix}.dlq") == []
        assert never_failed(nx, [tid])
    finally:
        w.stop()
        proxy.close()
        cleanup()
