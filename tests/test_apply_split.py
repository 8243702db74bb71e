"""apply_changes() of common/apply.c, split batches and its options (struct
apply_options: force_split, tick), against the real Neo4j of the local
stack. Driven by tests/clients/apply_client: one JSON line of Debezium tag
events in, one apply_changes() call, the results out. The errors a healthy
server cannot be made to give (a proxy's 4xx, Neo4j's memory-pool error, a
deadlock) come from the HTTP fault proxy of tests/faultproxy.py in front of
Neo4j, answering only the requests that carry the poisoned tag's id
(match_body), so the others reach the real server and commit.

The worker loop that will set force_split after repeated failures is not
wired yet; these tests call apply_changes() as it will. Every test removes
the tags (and their placeholder project) it applied."""
import os
import subprocess
import uuid

import pytest

from faultproxy import FaultProxy
from nexus import ROOT, Stack
from test_clients import Driver, free_port

COMMIT = r"^/db/[^/]+/tx/commit$"
CLIENT = os.path.join(ROOT, "build", "tests", "clients", "apply_client")
MAPPING = os.path.join(ROOT, "schemas", "mapping.cfg")


@pytest.fixture(scope="module")
def clients():
    p = subprocess.run(["make", "-s", "-C", ROOT, "clients"], capture_output=True, text=True)
    assert p.returncode == 0, f"building tests/clients failed:\n{p.stdout}{p.stderr}"


@pytest.fixture(scope="module")
def nx(stack):
    return stack if isinstance(stack, Stack) else Stack(stack)


@pytest.fixture
def tags(nx, clients):
    """new(n): n fresh tag ids of one project; all are deleted afterwards.
    The Tag statement is planned once beforehand (straight to Neo4j), so no
    request below waits for a cold planner."""
    project = str(uuid.uuid4())
    made = []

    def new(n):
        ids = [str(uuid.uuid4()) for _ in range(n)]
        made.extend(ids)
        return ids

    new.project = project
    warm = new(1)
    d = applier(nx)
    try:
        assert d.ask({"events": events(project, warm)}, timeout=120)["err"] == "ok"
    finally:
        d.close()
    yield new
    nx.cypher("MATCH (n:Tag) WHERE n.id IN $ids DETACH DELETE n", {"ids": made})
    nx.cypher("MATCH (p:Project {id: $p}) DETACH DELETE p", {"p": project})


def events(project, ids, lsn=1000):
    """One Debezium create event (schemaless envelope) per tag id."""
    return [{"before": None,
             "after": {"id": tid, "tenant_id": project, "project_id": project, "name": f"tag {k}",
                       "color": "red", "created_at": "2026-01-02T03:04:05.000006Z", "pg_version": 1},
             "source": {"schema": "public", "table": "tags", "lsn": lsn + k, "txId": 1,
                        "ts_ms": 1763900000000},
             "op": "c"} for k, tid in enumerate(ids)]


def applier(nx, url=None):
    env = nx.env
    return Driver([CLIENT, url or env["NEXUS_NEO4J_URL"], env.get("NEXUS_NEO4J_DB", "neo4j"),
                   env["NEXUS_NEO4J_USER"], env["NEXUS_NEO4J_PASSWORD"], "30000", MAPPING])


def apply(nx, project, ids, url=None, **opts):
    d = applier(nx, url)
    try:
        return d.ask(dict(events=events(project, ids), **opts))
    finally:
        d.close()


def in_graph(nx, ids):
    return set(nx.cypher_value("MATCH (n:Tag) WHERE n.id IN $ids RETURN collect(n.id) AS ids",
                               {"ids": ids}) or [])


def by_id(ans):
    return {r["key"].split("|", 1)[1]: r for r in ans["results"]}


def test_force_split_dead_letters_only_the_change_a_proxy_rejects(nx, tags):
    """A proxy in front of Neo4j answers every request carrying one tag
    with HTTP 413 and no Neo4j code: the poison pill force_split exists
    for. Without it the whole batch is transient, every time; with it the
    other two commit, the poisoned one is FAILED with the proxy's answer,
    and tick ran before each of the three single transactions."""
    good1, bad, good2 = ids = tags(3)
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    rule = proxy.add_rule("POST", COMMIT, None, status=413, body="request entity too large",
                          content_type="text/plain", match_body=bad)
    try:
        ans = apply(nx, tags.project, ids, url=proxy.url, tick=True)
        assert ans["err"] == "neo4j_transient", ans
        assert "HTTP 413" in ans["errstr"], ans
        assert ans["ticks"] == 0 and ans["transactions"] == 1, ans
        assert in_graph(nx, ids) == set()

        ans = apply(nx, tags.project, ids, url=proxy.url, force_split=True, tick=True)
    finally:
        proxy.close()
    assert ans["err"] == "ok", ans
    res = by_id(ans)
    assert res[bad]["status"] == "failed", ans
    assert res[bad]["reason"].startswith("could not parse the Neo4j response: HTTP 413"), ans
    assert res[good1]["status"] == res[good2]["status"] == "applied", ans
    assert res[good1]["element_id"] and res[good2]["element_id"], ans
    assert ans["transactions"] == 3 and ans["ticks"] == 3, ans
    assert rule.served == 2, "the batch, then the poisoned change alone"
    assert in_graph(nx, ids) == {good1, good2}


def test_a_split_stops_when_its_tick_asks(nx, tags):
    """tick returning non-zero (the worker asked to stop, or its partitions
    revoked) ends a forced split between two single transactions: the
    changes before it are committed, none after, and the call is a
    transient error with no result (the batch comes again, idempotent)."""
    ids = tags(5)
    ans = apply(nx, tags.project, ids, force_split=True, tick=True, stop_at_tick=3)
    assert ans["err"] == "neo4j_transient", ans
    assert "stopped applying 5 changes one by one after 2" in ans["errstr"], ans
    assert ans["ticks"] == 3 and ans["transactions"] == 2, ans
    assert all(r["status"] not in ("applied", "failed") for r in ans["results"]), ans
    assert in_graph(nx, ids) == set(ids[:2])


@pytest.mark.parametrize("code, failed", [
    ("Neo.TransientError.General.MemoryPoolOutOfMemoryError", True),
    ("Neo.ClientError.Statement.SyntaxError", True),
    ("Neo.ClientError.Cluster.NotALeader", False),
    ("Neo.TransientError.General.DatabaseUnavailable", False),
    ("Neo.TransientError.Transaction.DeadlockDetected", False),
    ("Neo.TransientError.Transaction.LockClientStopped", False),
])
def test_force_split_answered_errors_fail_the_change_contention_is_retried(nx, tags, code, failed):
    """In a forced split, an error Neo4j answered for one change marks it
    FAILED whatever its class (the memory-pool error one huge statement
    gets is transient, yet sent again it fails again); the contention codes
    (deadlock, lock client) and the server's state (a leader switch, a
    database unavailable) are not the change's fault and stay a transient
    error of the whole call, with nothing FAILED."""
    good1, bad, good2 = ids = tags(3)
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    proxy.add_rule("POST", COMMIT, None, code=code, match_body=bad)
    try:
        ans = apply(nx, tags.project, ids, url=proxy.url, force_split=True, tick=True)
    finally:
        proxy.close()
    if failed:
        assert ans["err"] == "ok", ans
        res = by_id(ans)
        assert res[bad]["status"] == "failed", ans
        assert res[bad]["reason"].startswith(code + ": injected by tests/faultproxy.py"), ans
        assert res[good1]["status"] == res[good2]["status"] == "applied", ans
        assert ans["ticks"] == ans["transactions"] == 3, ans
        assert in_graph(nx, ids) == {good1, good2}
    else:
        assert ans["err"] == "neo4j_transient", ans
        assert ans["errstr"].startswith(code + ": "), ans
        assert not [r for r in ans["results"] if r["status"] == "failed"], ans
        # stopped at the poisoned change, the second of the split
        assert ans["ticks"] == ans["transactions"] == 2, ans
        assert bad not in in_graph(nx, ids)


@pytest.mark.parametrize("rule", [
    {"status": 400, "body": "<html>blocked by the proxy</html>", "content_type": "text/html"},
    {"status": 413, "body": '{"message": "request entity too large"}'},
    {"code": "Neo.TransientError.General.MemoryPoolOutOfMemoryError"},
], ids=["html-400", "json-413-no-code", "neo4j-code"])
def test_force_split_every_change_rejected_alike_is_retried(nx, tags, rule):
    """The proxy answers every request alike. In a forced split each of the
    n > 1 changes fails the same way, and so does the canary (RETURN 1):
    that is the environment, not n bad events, so the whole call is
    transient and nothing is FAILED. Without a Neo4j code "the same way" is
    the same whole reason text. A single change alone has no such evidence
    and is FAILED."""
    ids = tags(4)
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    proxy.add_rule("POST", COMMIT, None, **rule)
    try:
        ans = apply(nx, tags.project, ids[:3], url=proxy.url, force_split=True, tick=True)
        one = apply(nx, tags.project, ids[3:], url=proxy.url, force_split=True, tick=True)
    finally:
        proxy.close()
    assert ans["err"] == "neo4j_transient", ans
    assert ans["errstr"].startswith("all 3 changes rejected alike, retrying the batch: "), ans
    assert [r["status"] for r in ans["results"]] == ["pending"] * 3, ans
    assert ans["ticks"] == ans["transactions"] == 3, ans
    assert one["err"] == "ok", one
    assert one["results"][0]["status"] == "failed", one
    assert one["ticks"] == one["transactions"] == 1, one
    assert in_graph(nx, ids) == set()


def test_force_split_rejected_alike_while_the_canary_commits_fails_each_change(nx, tags):
    """Three changes rejected alike (SyntaxError injected on the requests
    that carry them) while Neo4j commits everything else, the canary
    RETURN 1 included: in a forced split that is the changes' fault, so
    each is FAILED (to be dead-lettered) and the call succeeds: a permanent
    error cannot hold a partition for ever. Before: retried for ever."""
    ids = tags(3)
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    rule = proxy.add_rule("POST", COMMIT, None, code="Neo.ClientError.Statement.SyntaxError",
                          match_body="|".join(ids))
    try:
        ans = apply(nx, tags.project, ids, url=proxy.url, force_split=True, tick=True)
    finally:
        proxy.close()
    assert ans["err"] == "ok", ans
    assert [r["status"] for r in ans["results"]] == ["failed"] * 3, ans
    assert all(r["reason"].startswith("Neo.ClientError.Statement.SyntaxError") for r in ans["results"]), ans
    assert rule.served == 3 and ans["transactions"] == 3, ans
    assert in_graph(nx, ids) == set()


def test_force_split_without_an_answer_is_transient(nx, tags):
    """No answer is never the change's fault, forced split or not: a closed
    port (connection refused) stops the split at its first change, and a
    gateway's code-less 503 for a single change is transient too, nothing
    FAILED either time."""
    ids = tags(3)
    ans = apply(nx, tags.project, ids, url=f"http://127.0.0.1:{free_port()}", force_split=True,
                tick=True)
    assert ans["err"] == "neo4j_transient", ans
    assert "could not reach Neo4j" in ans["errstr"], ans
    assert not [r for r in ans["results"] if r["status"] == "failed"], ans
    assert ans["ticks"] == ans["transactions"] == 1, ans

    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    proxy.add_rule("POST", COMMIT, None, status=503, body="no healthy upstream",
                   content_type="text/plain", match_body=ids[0])
    try:
        ans = apply(nx, tags.project, ids[:1], url=proxy.url, force_split=True)
    finally:
        proxy.close()
    assert ans["err"] == "neo4j_transient", ans
    assert "HTTP 503" in ans["errstr"], ans
    assert ans["results"][0]["status"] == "pending", ans
    assert in_graph(nx, ids) == set()


def test_tick_runs_before_every_transaction_of_a_permanent_split(nx, tags):
    """No force: Neo4j rejects the batch permanently (a SyntaxError on the
    request carrying one tag), so apply splits it by itself. tick runs once
    before each of the three single transactions (four in all with the
    batch), and only the rejected change is FAILED."""
    good1, bad, good2 = ids = tags(3)
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    proxy.add_rule("POST", COMMIT, None, code="Neo.ClientError.Statement.SyntaxError", match_body=bad)
    try:
        ans = apply(nx, tags.project, ids, url=proxy.url, tick=True)
    finally:
        proxy.close()
    assert ans["err"] == "ok", ans
    assert ans["transactions"] == 4 and ans["ticks"] == 3, ans
    res = by_id(ans)
    assert res[bad]["status"] == "failed", ans
    assert res[good1]["status"] == res[good2]["status"] == "applied", ans
    assert in_graph(nx, ids) == {good1, good2}
