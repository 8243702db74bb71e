"""Neo4j's Query API as the transport (neo4j.api / NEXUS_NEO4J_API), against
the stack's real Neo4j 5.26: a tag worker on `query` keeps the graph and
sync_status as on tx/commit; a batch of several statements is one explicit
transaction (query/v2/tx ... /commit) that a failing statement rolls back
and that is classified as on tx/commit; the cluster affinity the server
answers goes back on the transaction's requests; a transient code is retried, never
dead-lettered; `auto` reads the discovery document and picks tx/commit on
5.26, the Query API where the document lists no transactional endpoint,
and decides nothing while the document cannot be read.

Requests go through tests/faultproxy.py, forwarding (its log shows which
endpoints a worker used) or, where a test says so, answering itself."""
import json
import os
import re
import subprocess
import urllib.request
import uuid

import pytest

from faultproxy import FaultProxy
from nexus import (ROOT, Worker, end_offsets, new_id, new_tags, run_tool, save_end_offsets, scratch_lanes,
                   tags_applied, track, wait_until)

QUERY_FIRST = r"^/db/[^/]+/query/v2(/tx)?$"   # the request that opens a batch's transaction
CLIENT = os.path.join(ROOT, "build", "tests", "clients", "neo4j_client")
TEST_LABEL = "NexusClientTest"


def synced(nx, ids):
    return int(nx.scalar("SELECT count(*) FROM tags WHERE sync_status = 'SUCCESS' AND id IN (" +
                         ", ".join(f"'{i}'" for i in ids) + ")"))


def never_failed(nx, ids):
    return nx.scalar("SELECT count(*) FROM tags WHERE sync_attempts > 0 AND id IN (" +
                     ", ".join(f"'{i}'" for i in ids) + ")") == "0"


def dlq_end(nx):
    return sum(end_offsets(nx, ["nexus.dlq"]).values())


def paths(proxy, method=None):
    return [p for m, p, _, _ in list(proxy.log) if method is None or m == method]


def worker_at_the_end(nx, tmp_path, proxy, **env):
    """A tag worker whose group starts at the lane topics' ends (only this
    test's rows), through the proxy; tracked, not started."""
    group = f"qapi-{uuid.uuid4().hex[:8]}"
    start = str(tmp_path / "start.json")
    save_end_offsets(nx, "tag", start)
    p = run_tool(nx, "nexus-replay", "--worker", "tag", "--group", group, "--from-file", start, "--execute")
    assert p.returncode == 0, p.stdout + p.stderr
    return track(Worker(nx, "tag", str(tmp_path / "w"), group, NEXUS_NEO4J_URL=proxy.url,
                        NEXUS_RETRY_MAX_MS=500, NEXUS_BATCH_MS=200, **env))


def test_a_worker_on_the_query_api_keeps_graph_and_sync_status(nx, project, tmp_path):
    """NEXUS_NEO4J_API=query: tags, their links to a content item and a
    delete reach Neo4j and are written back as SUCCESS; every request is a
    Query API one (batches of tags and links are explicit transactions of
    several statements, ending in a commit), none goes to tx/commit."""
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    w = worker_at_the_end(nx, tmp_path, proxy, NEXUS_NEO4J_API="query")
    item = new_id()
    try:
        w.start()
        ids = new_tags(nx, project, 6, f"q-{uuid.uuid4().hex[:6]}")
        nx.psql(f"""BEGIN;
        INSERT INTO content_items (id, tenant_id, project_id, content_type, title)
          VALUES ('{item}', '{project['tenant']}', '{project['project']}', 'text', 'q');
        INSERT INTO content_tags (content_id, tag_id) VALUES ('{item}', '{ids[0]}'), ('{item}', '{ids[1]}');
        UPDATE tags SET name = 'renamed' WHERE id = '{ids[2]}';
        COMMIT;""")
        wait_until(lambda: synced(nx, ids) == 6, 120, what="the tags applied and written back")
        wait_until(lambda: nx.cypher_value("MATCH (:ContentItem {id: $c})-[r:TAGGED_WITH]->(t:Tag) "
                                           "WHERE t.id IN $ids RETURN count(r)", {"c": item, "ids": ids}) == 2,
                   120, what="the two links")
        wait_until(lambda: nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN t.name", {"id": ids[2]}) == "renamed",
                   60, what="the update")
        nx.psql(f"DELETE FROM content_tags WHERE content_id = '{item}'; DELETE FROM tags WHERE id = '{ids[5]}'")
        wait_until(lambda: tags_applied(nx, [ids[5]]) == 0, 120, what="the deleted tag gone")
        wait_until(lambda: nx.cypher_value("MATCH (:ContentItem {id: $c})-[r:TAGGED_WITH]->() RETURN count(r)",
                                           {"c": item}) == 0, 120, what="the links gone")
        assert tags_applied(nx, ids[:5]) == 5 and never_failed(nx, ids)
        sent = paths(proxy, "POST")
        assert sent and all("/query/v2" in p for p in sent), sent
        assert any(re.search(r"/query/v2/tx/[^/]+/commit$", p) for p in sent), sent
        assert w.total("dlq") == 0 and w.proc.poll() is None
        assert "using the" not in w.log_text()  # forced: no discovery
    finally:
        w.stop()
        proxy.close()
        nx.psql(f"DELETE FROM content_tags WHERE content_id = '{item}'; DELETE FROM content_items WHERE id = '{item}'")


def test_a_statement_failing_mid_transaction_rolls_it_back_with_its_index(nx, tmp_path, monkeypatch):
    """The client (tests/clients/neo4j_client) on the Query API: four
    statements, the third fails at run time on its data: one explicit
    transaction of three requests, the failing one's answer classified
    PERMANENT with its index and "code: message", a DELETE rolls the
    transaction back, and nothing of the first two is committed."""
    p = subprocess.run(["make", "-s", "-C", ROOT, "clients"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    tag = f"t-{uuid.uuid4().hex}"
    monkeypatch.setenv("NEXUS_NEO4J_API", "query")
    stmts = [
        {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 1}}) RETURN n.i AS i", "parameters": {"tag": tag}},
        {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 2}}) RETURN n.i AS i", "parameters": {"tag": tag}},
        {"statement": f"UNWIND [1, $zero] AS z CREATE (n:{TEST_LABEL} {{tag: $tag, v: 1 / z}})",
         "parameters": {"tag": tag, "zero": 0}},
        {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 4}})", "parameters": {"tag": tag}},
    ]
    try:
        out = subprocess.run([CLIENT, proxy.url, nx.env.get("NEXUS_NEO4J_DB", "neo4j"), nx.env["NEXUS_NEO4J_USER"],
                              nx.env["NEXUS_NEO4J_PASSWORD"], "10000"], input=json.dumps({"statements": stmts}) + "\n",
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        ans = json.loads(out.stdout)
        assert ans["err"] == "neo4j_permanent", ans
        assert ans["failed_stmt"] == 2 and ans["results_null"], ans
        assert ans["errstr"].startswith("Neo.ClientError.Statement.ArithmeticError: "), ans
        assert nx.cypher_value(f"MATCH (n:{TEST_LABEL} {{tag: $tag}}) RETURN count(n)", {"tag": tag}) == 0
        log = [(m, p) for m, p, _, _ in proxy.log]
        assert [m for m, _ in log] == ["POST", "POST", "POST", "DELETE"], log
        tx = log[0][1]
        assert re.search(r"/query/v2/tx$", tx), log
        txid = log[1][1].rsplit("/", 1)[1]
        assert log[1][1] == log[2][1] == f"{tx}/{txid}" and log[3][1] == f"{tx}/{txid}", log
        # the same four, all good: three requests and a commit, all four results
        stmts[2] = {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 3}}) RETURN n.i AS i",
                    "parameters": {"tag": tag}}
        out = subprocess.run([CLIENT, proxy.url, nx.env.get("NEXUS_NEO4J_DB", "neo4j"), nx.env["NEXUS_NEO4J_USER"],
                              nx.env["NEXUS_NEO4J_PASSWORD"], "10000"], input=json.dumps({"statements": stmts}) + "\n",
                             capture_output=True, text=True, timeout=60)
        ans = json.loads(out.stdout)
        assert ans["err"] == "ok", ans
        assert [[row["row"] for row in r["data"]] for r in ans["results"]] == [[[1]], [[2]], [[3]], []], ans
        assert [r["columns"] for r in ans["results"]][:3] == [["i"], ["i"], ["i"]]
        assert paths(proxy)[-1].endswith("/commit")
        assert nx.cypher_value(f"MATCH (n:{TEST_LABEL} {{tag: $tag}}) RETURN count(n)", {"tag": tag}) == 4
    finally:
        proxy.close()
        nx.cypher(f"MATCH (n:{TEST_LABEL} {{tag: $tag}}) DETACH DELETE n", {"tag": tag})


def test_the_cluster_affinity_goes_back_on_the_transactions_requests(nx, monkeypatch):
    """Aura answers a neo4j-cluster-affinity header that must come back on
    every later request of the transaction, the commit and the rollback
    included (the proxy adds it to Neo4j's answers and records what the
    client sends): the opening request carries none, each follow-up the
    one answered; a transaction that fails rolls back with it too."""
    p = subprocess.run(["make", "-s", "-C", ROOT, "clients"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    proxy.answer_headers = [("neo4j-cluster-affinity", "member-7:abc=")]
    monkeypatch.setenv("NEXUS_NEO4J_API", "query")
    ok = [{"statement": "RETURN $i AS i", "parameters": {"i": i}} for i in range(3)]
    bad = ok[:1] + [{"statement": "RETURN 1 / $z AS x", "parameters": {"z": 0}}] + ok[2:]
    try:
        out = subprocess.run([CLIENT, proxy.url, nx.env.get("NEXUS_NEO4J_DB", "neo4j"), nx.env["NEXUS_NEO4J_USER"],
                              nx.env["NEXUS_NEO4J_PASSWORD"], "10000"],
                             input="".join(json.dumps({"statements": s}) + "\n" for s in (ok, bad)),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        answers = [json.loads(line) for line in out.stdout.splitlines()]
        assert answers[0]["err"] == "ok" and answers[1]["err"] == "neo4j_permanent", answers
        sent = [(m, p, {k.lower(): v for k, v in h.items()}.get("neo4j-cluster-affinity"))
                for m, p, h in proxy.request_headers]
        assert [(m, a) for m, _, a in sent] == [
            ("POST", None), ("POST", "member-7:abc="), ("POST", "member-7:abc="),   # open, run, commit
            ("POST", None), ("POST", "member-7:abc="), ("DELETE", "member-7:abc="),  # open, fail, roll back
        ], sent
        assert sent[2][1].endswith("/commit") and sent[5][1] == sent[4][1], sent
    finally:
        proxy.close()


def test_a_transaction_the_server_lost_is_transient_not_the_statements_fault(nx, monkeypatch):
    """A follow-up answered 404 Neo.ClientError.Request.Invalid "Transaction
    ... not found" (what 5.26 answers after a restart, an expiry, or when a
    cluster member other than the transaction's gets the request; the proxy
    answers it here): Request.Invalid is otherwise PERMANENT, but here the
    statements are not at fault, so the run is TRANSIENT and unreached, and
    the next run commits."""
    p = subprocess.run(["make", "-s", "-C", ROOT, "clients"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    proxy.add_rule("POST", r"/query/v2/tx/[^/]+$", 1, status=404, code="Neo.ClientError.Request.Invalid")
    monkeypatch.setenv("NEXUS_NEO4J_API", "query")
    stmts = [{"statement": "RETURN $i AS i", "parameters": {"i": i}} for i in range(3)]
    try:
        out = subprocess.run([CLIENT, proxy.url, nx.env.get("NEXUS_NEO4J_DB", "neo4j"), nx.env["NEXUS_NEO4J_USER"],
                              nx.env["NEXUS_NEO4J_PASSWORD"], "10000"],
                             input="".join(json.dumps({"statements": stmts}) + "\n" for _ in range(2)),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lost, again = [json.loads(line) for line in out.stdout.splitlines()]
        assert lost["err"] == "neo4j_transient" and lost["failed_stmt"] == 3, lost
        assert "lost transaction" in lost["errstr"] and "Neo.ClientError.Request.Invalid" in lost["errstr"], lost
        assert again["err"] == "ok", again
    finally:
        proxy.close()


def test_a_batch_failing_mid_transaction_is_rolled_back_split_and_dead_lettered(nx, project, tmp_path):
    """A worker on the Query API, one batch of three statements built from
    real events (a link, two tags of which one holds an impossible time, a
    delete), the bad one in the middle: the transaction is rolled back
    (DELETE), the error is PERMANENT (Neo.ClientError...), the batch is
    split, the good changes commit one by one and the bad tag alone goes to
    the DLQ as neo4j_permanent, FAILED in sync_status. Scratch topics, so
    nobody replays the altered event."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    w = track(Worker(nx, "tag", str(tmp_path / "w"), f"qapi-split-{uuid.uuid4().hex[:8]}",
                     NEXUS_BATCH_MS=2000, NEXUS_MAPPING=mapping, NEXUS_NEO4J_URL=proxy.url,
                     NEXUS_NEO4J_API="query"))
    ids = new_tags(nx, project, 3, f"qsplit-{uuid.uuid4().hex[:6]}")
    good, bad, gone = ids[0], ids[1], ids[2]
    item = new_id()
    nx.psql(f"""INSERT INTO content_items (id, tenant_id, project_id, content_type, title)
      VALUES ('{item}', '{project['tenant']}', '{project['project']}', 'text', 'qs');
      INSERT INTO content_tags (content_id, tag_id) VALUES ('{item}', '{good}');
      DELETE FROM tags WHERE id = '{gone}';""")

    def event(pred):
        def find():
            return [m for m in nx.consume_all("nexus.normal.tag") if m.get("payload") and pred(m["payload"])]
        return wait_until(find, 120, what="a real tag event")[0]
    try:
        link = event(lambda v: f'"tag_id":"{good}"' in v and '"op":"c"' in v)
        tags = [event(lambda v, t=t: f'"id":"{t}"' in v and '"op":"c"' in v) for t in (good, bad)]
        delete = event(lambda v: f'"id":"{gone}"' in v and '"op":"d"' in v)
        bad_value = json.loads(tags[1]["payload"])
        bad_value["after"]["created_at"] = "2026-02-10T25:61:00Z"
        batch = [(link["key"], link["payload"]), (tags[0]["key"], tags[0]["payload"]),
                 (tags[1]["key"], json.dumps(bad_value)), (delete["key"], delete["payload"])]
        for key, value in batch:
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        w.start()
        dead = wait_until(lambda: nx.consume_all(f"{prefix}.dlq"), 120, what="the dead letter")
        assert len(dead) == 1 and json.loads(dead[0]["payload"])["after"]["id"] == bad, dead
        h = dead[0]["headers"]
        hdr = dict(zip(h[0::2], h[1::2]))
        assert hdr["nexus.error.class"] == "neo4j_permanent", hdr
        assert hdr["nexus.reason"].startswith("Neo.ClientError."), hdr
        wait_until(lambda: tags_applied(nx, [good]) == 1, 60, what="the good tag applied")
        assert nx.cypher_value("MATCH (:ContentItem {id: $c})-[r:TAGGED_WITH]->(:Tag {id: $t}) RETURN count(r)",
                               {"c": item, "t": good}) == 1
        assert tags_applied(nx, [bad, gone]) == 0
        wait_until(lambda: nx.scalar(f"SELECT sync_status FROM tags WHERE id = '{bad}'") == "FAILED", 60,
                   what="the bad tag FAILED")
        assert "one by one" in w.log_text()
        # the batch's transaction: opened, one more statement that failed,
        # rolled back; never committed
        log = [(m, p) for m, p, _, _ in proxy.log]
        opened = [i for i, (m, p) in enumerate(log) if m == "POST" and p.endswith("/query/v2/tx")]
        assert opened, log
        first = opened[0]
        tx = log[first + 1][1]
        assert re.search(r"/query/v2/tx/[^/]+$", tx) and log[first + 1][0] == "POST", log
        assert ("DELETE", tx) in log[first + 2:first + 3], log
        assert ("POST", tx + "/commit") not in log, log
    finally:
        w.stop()
        proxy.close()
        cleanup()
        nx.psql(f"DELETE FROM content_tags WHERE content_id = '{item}'; DELETE FROM content_items WHERE id = '{item}'")


def test_a_transient_code_on_the_query_api_is_retried_not_dead_lettered(nx, project, tmp_path):
    """Neo.TransientError.Transaction.DeadlockDetected answered (by the
    proxy) to the next 3 requests that open a batch's transaction on the
    Query API: each batch is retried with backoff, nothing is
    dead-lettered, the rows end applied and SUCCESS, never FAILED."""
    code = "Neo.TransientError.Transaction.DeadlockDetected"
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    w = worker_at_the_end(nx, tmp_path, proxy, NEXUS_NEO4J_API="query")
    try:
        w.start()
        warm = new_tags(nx, project, 1, "qwarm")
        wait_until(lambda: synced(nx, warm) == 1, 120, what="the warm-up tag applied and written back")
        dlq0 = dlq_end(nx)
        rule = proxy.add_rule("POST", QUERY_FIRST, 3, code=code)
        ids = new_tags(nx, project, 5, f"qfault-{uuid.uuid4().hex[:6]}")
        wait_until(lambda: rule.served == 3, 120, what="3 injected answers")
        wait_until(lambda: synced(nx, ids) == 5, 120, what="the tags applied and written back")
        assert tags_applied(nx, ids) == 5 and never_failed(nx, ids)
        assert dlq_end(nx) == dlq0, "a dead letter for an error that asked for a retry"
        assert w.total("dlq") == 0
        assert f"could not commit to Neo4j: {code}: injected by tests/faultproxy.py" in w.log_text()
        assert w.proc.poll() is None
    finally:
        w.stop()
        proxy.close()


def test_auto_picks_tx_where_offered_after_the_first_answer_and_says_why(nx, project, tmp_path):
    """neo4j.api auto (the default) against the stack's Neo4j (5.26, or
    2026 in tests/run's second leg; both still list tx): the discovery
    document (GET /) answered 503 three times at start-up decides nothing
    (the worker waits, logging why); the first real answer lists the
    transactional endpoint, so tx/commit is used, and the log line names
    the server's version and says why."""
    with urllib.request.urlopen(nx.env["NEXUS_NEO4J_URL"] + "/", timeout=10) as r:
        discovery = json.load(r)
    assert "transaction" in discovery, discovery
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    down = proxy.add_rule("GET", r"^/$", 3, status=503, body="unavailable", content_type="text/plain")
    w = worker_at_the_end(nx, tmp_path, proxy)
    try:
        w.start()
        ids = new_tags(nx, project, 3, f"qauto-{uuid.uuid4().hex[:6]}")
        wait_until(lambda: synced(nx, ids) == 3, 120, what="the tags applied and written back")
        assert down.served == 3
        log = w.log_text()
        assert "could not read Neo4j's discovery document" in log and "HTTP 503" in log, log[-3000:]
        m = re.search(re.escape(f"Neo4j {discovery['neo4j_version']} {discovery['neo4j_edition']} at ") +
                      r"\S+: using the HTTP transactional API \(tx/commit\): the server offers it", log)
        assert m, log[-3000:]
        sent = paths(proxy, "POST")
        assert sent and all(p.endswith("/tx/commit") for p in sent), sent
        assert never_failed(nx, ids)
    finally:
        w.stop()
        proxy.close()


def test_auto_picks_the_query_api_where_tx_is_not_offered(nx, project, tmp_path):
    """A server whose discovery document lists the Query API and no
    transactional endpoint (as Aura's and later releases'; the proxy
    answers it): auto picks the Query API, says why, and syncs."""
    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    doc = json.dumps({"query": proxy.url + "/db/{databaseName}/query/v2", "neo4j_version": "2026.09.0",
                      "neo4j_edition": "enterprise"})
    proxy.add_rule("GET", r"^/$", None, body=doc)
    w = worker_at_the_end(nx, tmp_path, proxy)
    try:
        w.start()
        ids = new_tags(nx, project, 3, f"qaura-{uuid.uuid4().hex[:6]}")
        wait_until(lambda: synced(nx, ids) == 3, 120, what="the tags applied and written back")
        assert ("Neo4j 2026.09.0 enterprise at" in w.log_text() and
                "using the Query API (query/v2): the server offers no transactional endpoint" in w.log_text())
        sent = paths(proxy, "POST")
        assert sent and all("/query/v2" in p for p in sent), sent
    finally:
        w.stop()
        proxy.close()
