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
import urllib.request
import uuid

from faultproxy import FaultProxy
from nexus import (Worker, end_offsets, new_tags, run_tool, save_end_offsets, scratch_lanes, tags_applied,
                   track, wait_until)

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
