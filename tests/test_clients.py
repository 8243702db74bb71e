"""The three server clients of common/ against the real local stack: the
Neo4j HTTP client (common/neo4j.c), the PostgreSQL write-back
(common/pgstatus.c) and the dead-letter producer (common/dlq.c).

Each client is driven by a small C program from tests/clients/ that reads one
JSON request per line and answers one JSON line, so one process (and one
connection) can go through several steps. With NEXUS_TEST_VALGRIND=1 every
program runs under valgrind --leak-check=full --error-exitcode=1 and a test
fails if valgrind finds anything. Every test removes what it inserts.
"""
import json
import os
import re
import select
import socket
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest

from nexus import ROOT, Stack, wait_until

CLIENTS_SRC = os.path.join(ROOT, "tests", "clients")
CLIENTS_BIN = os.path.join(ROOT, "build", "tests", "clients")
MAPPING = os.path.join(ROOT, "schemas", "mapping.cfg")
VALGRIND = os.environ.get("NEXUS_TEST_VALGRIND") == "1"
# valgrind slows everything down; timing bounds stretch with it
SLOW = 20 if VALGRIND else 1
TEST_LABEL = "NexusClientTest"


@pytest.fixture(scope="module")
def clients():
    p = subprocess.run(["make", "-s", "-C", ROOT, "clients"], capture_output=True, text=True)
    assert p.returncode == 0, f"building tests/clients failed:\n{p.stdout}{p.stderr}"
    return CLIENTS_BIN


@pytest.fixture(scope="module")
def nx(stack):
    return stack if isinstance(stack, Stack) else Stack(stack)


def free_port():
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    """One client program; ask() sends a request line, returns the answer."""

    def __init__(self, argv):
        cmd = list(argv)
        if VALGRIND:
            cmd = ["valgrind", "-q", "--error-exitcode=1", "--leak-check=full",
                   "--show-leak-kinds=definite,indirect",
                   "--errors-for-leak-kinds=definite,indirect",
                   f"--suppressions={os.path.join(CLIENTS_SRC, 'valgrind.supp')}"] + cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.pending = b""

    def ask(self, req, timeout=60):
        self.send(req)
        return self.answer(timeout)

    def send(self, req):
        data = req if isinstance(req, bytes) else json.dumps(req).encode()
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()
        self.last = data

    def answer(self, timeout=60):
        data = self.last
        deadline = time.time() + timeout * SLOW
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            left = deadline - time.time()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no answer within {timeout * SLOW}s to {data[:200]!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"client died: {self.proc.stderr.read().decode(errors='replace')}")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        """End the program; it must exit 0 (under valgrind: no errors)."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60 * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert self.proc.returncode == 0, f"client exited {self.proc.returncode}:\n{err[-4000:]}"
        return err


# --- Neo4j ----------------------------------------------------------------

def neo4j_driver(clients, env, url=None, password=None, timeout_ms=10000):
    return Driver([os.path.join(clients, "neo4j_client"), url or env["NEXUS_NEO4J_URL"],
                   env.get("NEXUS_NEO4J_DB", "neo4j"), env["NEXUS_NEO4J_USER"],
                   env["NEXUS_NEO4J_PASSWORD"] if password is None else password, str(timeout_ms)])


@pytest.fixture
def tag(nx):
    """A tag for the test's nodes; they are deleted afterwards."""
    t = f"t-{uuid.uuid4().hex}"
    yield t
    nx.cypher(f"MATCH (n:{TEST_LABEL} {{tag: $tag}}) DETACH DELETE n", {"tag": t})


def count_tagged(nx, tag):
    return nx.cypher_value(f"MATCH (n:{TEST_LABEL} {{tag: $tag}}) RETURN count(n) AS c", {"tag": tag})


def test_neo4j_multi_statement_commits_and_returns_rows(clients, nx, tag):
    """Three statements, one request, one transaction: all committed, each
    result in order with its columns and rows."""
    d = neo4j_driver(clients, nx.env)
    try:
        ans = d.ask({"statements": [
            {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 1}}) RETURN n.i AS i", "parameters": {"tag": tag}},
            {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 2}}) RETURN n.i AS i", "parameters": {"tag": tag}},
            {"statement": f"MATCH (n:{TEST_LABEL} {{tag: $tag}}) RETURN n.i AS i ORDER BY i", "parameters": {"tag": tag}},
        ]})
    finally:
        d.close()
    assert ans["err"] == "ok", ans
    assert ans["params_intact"]
    res = ans["results"]
    assert [r["columns"] for r in res] == [["i"], ["i"], ["i"]]
    assert [[row["row"] for row in r["data"]] for r in res] == [[[1]], [[2]], [[1], [2]]]
    assert count_tagged(nx, tag) == 2


@pytest.mark.parametrize("bad, code", [
    ("CREATE (n:NexusClientTest {tag: $tag) RETURN n", "Neo.ClientError.Statement.SyntaxError"),
    ("RETURN 1 / $zero AS x", "Neo.ClientError.Statement.ArithmeticError"),
    # fails after streaming a row: its partial result must not count as done
    ("UNWIND [1, $zero] AS z RETURN 1 / z AS x", "Neo.ClientError.Statement.ArithmeticError"),
    ("UNWIND [1, $zero] AS z CREATE (n:NexusClientTest {tag: $tag, v: 1 / z})",
     "Neo.ClientError.Statement.ArithmeticError"),
])
def test_neo4j_error_is_permanent_with_index_and_nothing_committed(clients, nx, tag, bad, code):
    """A statement the server rejects (at parse time or at run time, before or
    after it streamed rows) fails the whole request as PERMANENT, names its
    index, and the statements before it are rolled back."""
    d = neo4j_driver(clients, nx.env)
    try:
        ans = d.ask({"statements": [
            {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 1}})", "parameters": {"tag": tag}},
            {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 2}})", "parameters": {"tag": tag}},
            {"statement": bad, "parameters": {"tag": tag, "zero": 0}},
            {"statement": f"CREATE (n:{TEST_LABEL} {{tag: $tag, i: 4}})", "parameters": {"tag": tag}},
        ]})
    finally:
        d.close()
    assert ans["err"] == "neo4j_permanent", ans
    assert ans["failed_stmt"] == 2, ans
    assert ans["results_null"]
    assert ans["errstr"].startswith(code + ": "), ans["errstr"]
    assert count_tagged(nx, tag) == 0


def test_neo4j_wrong_password_is_transient(clients, nx):
    """Credentials are not the event's fault: Security errors are TRANSIENT.
    One failed attempt only, so Neo4j's lock-out of the account (after 3) is
    never reached, and the right password still works afterwards."""
    d = neo4j_driver(clients, nx.env, password="not-the-password")
    try:
        ans = d.ask({"statements": [{"statement": "RETURN 1 AS one"}]})
    finally:
        d.close()
    assert ans["err"] == "neo4j_transient", ans
    assert ans["errstr"].startswith("Neo.ClientError.Security.Unauthorized"), ans["errstr"]
    assert ans["results_null"]
    d = neo4j_driver(clients, nx.env)
    try:
        assert d.ask({"statements": [{"statement": "RETURN 1 AS one"}]})["err"] == "ok"
    finally:
        d.close()


def test_neo4j_closed_port_is_transient_within_a_second(clients, nx):
    d = neo4j_driver(clients, nx.env, url=f"http://127.0.0.1:{free_port()}", timeout_ms=30000)
    try:
        ans = d.ask({"statements": [{"statement": "RETURN 1"}]})
    finally:
        d.close()
    assert ans["err"] == "neo4j_transient", ans
    assert ans["failed_stmt"] == 1
    assert "could not reach Neo4j" in ans["errstr"]
    assert ans["ms"][0] < 1000 * SLOW, ans


def test_neo4j_silent_server_times_out_as_transient(clients, nx):
    """A server that accepts the connection and never answers: the request
    timeout ends it, TRANSIENT, close to timeout_ms."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        d = neo4j_driver(clients, nx.env, url=url, timeout_ms=700)
        try:
            ans = d.ask({"statements": [{"statement": "RETURN 1"}]})
        finally:
            d.close()
    assert ans["err"] == "neo4j_transient", ans
    assert "timed out" in ans["errstr"].lower(), ans["errstr"]
    assert 650 <= ans["ms"][0] < 700 + 1000 * SLOW, ans


AWKWARD = [
    "plain",
    "it's \"quoted\" `back` ticks",
    "back\\slash \\\" \\n not a newline",
    "}) DETACH DELETE n WITH 1 AS x MATCH (m) DETACH DELETE m //",
    "$tag {tag} ${x} \" + $tag + \"",
    "line\nbreak\ttab\r\x01\x1f",
    "unicode é ß 中文 ✓ 😀",
    "",
]


def test_neo4j_parameters_round_trip_unchanged(clients, nx, tag):
    """Parameter values that look like Cypher or JSON syntax are data: they
    come back unchanged from RETURN and from a stored property, and the
    caller's parameter objects are untouched (borrowed, not copied)."""
    values = {
        "strings": AWKWARD,
        # cJSON alone would print 10**15 as 1e+15, a FLOAT to Neo4j
        "ints": [0, -1, 2147483647, 2147483648, -9007199254740990, 99999999999999,
                 10 ** 15, 2 * 10 ** 15, -(10 ** 17)],
        "floats": [0.5, -1.25e-7, 3.141592653589793],
        "nested": {"a": [1, "x", None, True, False], "b": {"c": "}{"}},
        "null": None,
    }
    d = neo4j_driver(clients, nx.env)
    try:
        ans = d.ask({"statements": [
            {"statement": "RETURN $strings AS s, $ints AS i, $floats AS f, $nested AS n, $null AS z",
             "parameters": values},
            {"statement": f"UNWIND range(0, size($strings) - 1) AS k "
                          f"CREATE (n:{TEST_LABEL} {{tag: $tag, k: k, s: $strings[k], ints: $ints}})",
             "parameters": {"tag": tag, "strings": AWKWARD, "ints": values["ints"]}},
        ]})
    finally:
        d.close()
    assert ans["err"] == "ok", ans
    assert ans["params_intact"]
    row = ans["results"][0]["data"][0]["row"]
    assert row == [values["strings"], values["ints"], values["floats"], values["nested"], None]
    stored = nx.cypher(f"MATCH (n:{TEST_LABEL} {{tag: $tag}}) RETURN n.k AS k, n.s AS s, n.ints AS i "
                       f"ORDER BY k", {"tag": tag})
    assert [r["s"] for r in stored] == AWKWARD
    # read without cJSON in between: integers arrived as Cypher INTEGER
    assert stored[0]["i"] == values["ints"]
    assert all(type(x) is int for x in stored[0]["i"]), stored[0]["i"]


def test_neo4j_unwind_merge_1000_rows_round_trip(clients, nx, tag, record_property):
    """Throughput figures: 1000 rows MERGEd by one UNWIND statement in one
    request, 5 times on one kept-alive connection (the first run creates, the
    rest match and set): first without an index on the merge key (a label
    scan per row), then with one, as the real labels will have; finally 20
    trivial requests for the per-request floor."""
    rows = [{"id": f"{tag}-{i}", "name": f"row {i} \"q\"", "n": i} for i in range(1000)]
    stmt = (f"UNWIND $rows AS r MERGE (n:{TEST_LABEL} {{id: r.id, tag: $tag}}) "
            f"SET n.name = r.name, n.n = r.n RETURN count(n) AS c")
    index = "nexus_client_test_id"
    figures = {}
    d = neo4j_driver(clients, nx.env, timeout_ms=60000)
    try:
        for phase in ("scan", "index"):
            if phase == "index":
                nx.cypher(f"MATCH (n:{TEST_LABEL} {{tag: $tag}}) DETACH DELETE n", {"tag": tag})
                nx.cypher(f"CREATE INDEX {index} IF NOT EXISTS FOR (n:{TEST_LABEL}) ON (n.id)")
                nx.cypher("CALL db.awaitIndexes(60)")
            ans = d.ask({"statements": [{"statement": stmt, "parameters": {"tag": tag, "rows": rows}}],
                         "repeat": 5}, timeout=300)
            assert ans["err"] == "ok", ans
            assert ans["results"][0]["data"][0]["row"] == [1000]
            assert count_tagged(nx, tag) == 1000
            ms = ans["ms"]
            figures[phase] = (ms[0], sorted(ms[1:])[2])
        ping = d.ask({"statements": [{"statement": "RETURN 1"}], "repeat": 20})
    finally:
        d.close()
        nx.cypher(f"DROP INDEX {index} IF EXISTS")
    floor = sorted(ping["ms"])[10]
    for phase, (first, warm) in figures.items():
        record_property(f"unwind_merge_1000_{phase}_first_ms", round(first, 1))
        record_property(f"unwind_merge_1000_{phase}_warm_median_ms", round(warm, 1))
        print(f"\n1000-row UNWIND MERGE ({phase}): first {first:.1f} ms, warm median {warm:.1f} ms")
    record_property("return_1_median_ms", round(floor, 2))
    print(f"RETURN 1 median {floor:.2f} ms")
    assert figures["index"][1] < 10000 * SLOW


# --- PostgreSQL write-back ------------------------------------------------

def writer_conninfo(env, port=None, app=None):
    parts = [f"host={env['NEXUS_PG_HOST']}", f"port={port or env['NEXUS_PG_PORT']}",
             f"dbname={env['NEXUS_PG_DB']}", f"user={env['NEXUS_WRITER_USER']}",
             f"password={env['NEXUS_WRITER_PASSWORD']}", "connect_timeout=5"]
    if app:
        parts.append(f"application_name={app}")
    return " ".join(parts)


def pg_driver(clients, env, **kw):
    return Driver([os.path.join(clients, "pgstatus_client"), writer_conninfo(env, **kw), MAPPING])


SYNC_COLS = ["pg_version", "sync_status", "sync_attempts", "last_sync_error", "last_sync_timestamp"]


@pytest.fixture
def pg_rows(nx):
    """A tenant and a thread_content row (with the rows it hangs off),
    inserted by the admin; the tenant's delete cascades to everything."""
    ids = {k: str(uuid.uuid4()) for k in
           ["tenant", "tenant2", "program", "project", "thread", "content", "content2"]}
    nx.psql(f"""
    BEGIN;
    INSERT INTO tenants (id, name, slug) VALUES
      ('{ids['tenant']}', 'client test', 'ct-{ids['tenant']}'),
      ('{ids['tenant2']}', 'client test 2', 'ct-{ids['tenant2']}');
    INSERT INTO programs (id, tenant_id, name) VALUES ('{ids['program']}', '{ids['tenant']}', 'p');
    INSERT INTO projects (id, program_id, tenant_id, name)
      VALUES ('{ids['project']}', '{ids['program']}', '{ids['tenant']}', 'p');
    INSERT INTO threads (id, project_id, tenant_id, title)
      VALUES ('{ids['thread']}', '{ids['project']}', '{ids['tenant']}', 't');
    INSERT INTO content_items (id, tenant_id, project_id, content_type, title) VALUES
      ('{ids['content']}', '{ids['tenant']}', '{ids['project']}', 'text', 'c'),
      ('{ids['content2']}', '{ids['tenant']}', '{ids['project']}', 'text', 'c2');
    INSERT INTO thread_content (thread_id, content_id, relevance_score, position) VALUES
      ('{ids['thread']}', '{ids['content']}', 0.5, 1),
      ('{ids['thread']}', '{ids['content2']}', 0.25, 2);
    COMMIT;
    """)
    yield ids
    nx.psql(f"DELETE FROM tenants WHERE id IN ('{ids['tenant']}', '{ids['tenant2']}')")


REJECT = "nexus-test-reject"


@pytest.fixture
def reject_trigger(nx):
    """A trigger on thread_content that rejects (22023) an UPDATE setting
    last_sync_error to REJECT: a statement the server refuses for good.
    (A key that is not a uuid no longer does: pgstatus leaves that row out,
    see tests/test_pg_bounds.py.)"""
    nx.psql(f"""
    CREATE OR REPLACE FUNCTION nexus_test_reject() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.last_sync_error = '{REJECT}' THEN
        RAISE EXCEPTION 'rejected by the test trigger' USING ERRCODE = '22023';
      END IF;
      RETURN NEW;
    END $$;
    DROP TRIGGER IF EXISTS nexus_test_reject ON thread_content;
    CREATE TRIGGER nexus_test_reject BEFORE UPDATE ON thread_content
      FOR EACH ROW EXECUTE FUNCTION nexus_test_reject();
    """)
    yield REJECT
    nx.psql("DROP TRIGGER IF EXISTS nexus_test_reject ON thread_content; "
            "DROP FUNCTION IF EXISTS nexus_test_reject()")


def row_of(nx, table, where):
    """The whole row as a dict (through JSON, so every column is exact)."""
    out = nx.scalar(f"SELECT row_to_json(t) FROM {table} t WHERE {where}")
    assert out, f"no row in {table} where {where}"
    return json.loads(out)


def tenant(nx, ids, k="tenant"):
    return row_of(nx, "tenants", f"id = '{ids[k]}'")


def link(nx, ids, k="content"):
    return row_of(nx, "thread_content", f"thread_id = '{ids['thread']}' AND content_id = '{ids[k]}'")


def changed(before, after):
    return {k for k in before if before[k] != after[k]}


def test_pg_write_back_updates_exactly_the_sync_columns(clients, nx, pg_rows):
    """SUCCESS sets status, timestamp, error NULL and the element id; FAILED
    sets status, attempts + 1 and the error; no other column moves, and the
    pg_version trigger does not count the write-back as a change. A SUCCESS
    without an element id keeps the stored one."""
    ids = pg_rows
    t0, l0, l20 = tenant(nx, ids), link(nx, ids), link(nx, ids, "content2")
    d = pg_driver(clients, nx.env)
    try:
        ans = d.ask({"rows": [
            {"table": "tenants", "outcome": "SUCCESS", "keys": [ids["tenant"]], "version": 1,
             "element_id": "4:ignored-for-tenants:1"},
            {"table": "thread_content", "outcome": "SUCCESS", "keys": [ids["thread"], ids["content"]],
             "version": 1, "element_id": "5:6e7e:42"},
        ]})
        assert ans["err"] == "ok", ans
        t1, l1 = tenant(nx, ids), link(nx, ids)
        assert changed(t0, t1) == {"sync_status", "last_sync_timestamp"}
        assert changed(l0, l1) == {"sync_status", "last_sync_timestamp", "neo4j_relationship_id"}
        assert t1["sync_status"] == l1["sync_status"] == "SUCCESS"
        assert l1["neo4j_relationship_id"] == "5:6e7e:42"
        assert t1["last_sync_error"] is None and t1["pg_version"] == 1
        assert link(nx, ids, "content2") == l20, "the other link row was touched"

        ans = d.ask({"rows": [
            {"table": "thread_content", "outcome": "FAILED", "keys": [ids["thread"], ids["content"]],
             "error": "Neo.ClientError.Schema.ConstraintValidationFailed: Node(1) already exists"},
            {"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant"]], "error": "boom"},
        ]})
        assert ans["err"] == "ok", ans
        t2, l2 = tenant(nx, ids), link(nx, ids)
        assert changed(t1, t2) == {"sync_status", "sync_attempts", "last_sync_error"}
        assert changed(l1, l2) == {"sync_status", "sync_attempts", "last_sync_error"}
        assert (t2["sync_status"], t2["sync_attempts"], t2["last_sync_error"]) == ("FAILED", 1, "boom")
        assert l2["last_sync_error"].startswith("Neo.ClientError.Schema")
        assert tenant(nx, ids, "tenant2") == row_of(nx, "tenants", f"id = '{ids['tenant2']}'")

        ans = d.ask({"rows": [
            {"table": "thread_content", "outcome": "SUCCESS", "keys": [ids["thread"], ids["content"]],
             "version": 1, "element_id": None},
        ]})
        assert ans["err"] == "ok", ans
        l3 = link(nx, ids)
        assert l3["neo4j_relationship_id"] == "5:6e7e:42", "a SUCCESS without id erased the id"
        assert (l3["sync_status"], l3["sync_attempts"], l3["last_sync_error"]) == ("SUCCESS", 1, None)
        assert l3["pg_version"] == 1
    finally:
        d.close()


def test_pg_repeated_success_writes_nothing_and_new_version_is_pending(clients, nx, pg_rows):
    """A replayed SUCCESS for a version already marked SUCCESS (same element
    id) leaves the row alone: no UPDATE, so no WAL and no echo event. A real
    change makes the row PENDING again until its own SUCCESS."""
    ids = pg_rows
    d = pg_driver(clients, nx.env)
    try:
        first = {"rows": [
            {"table": "tenants", "outcome": "SUCCESS", "keys": [ids["tenant"]], "version": 1},
            {"table": "thread_content", "outcome": "SUCCESS", "keys": [ids["thread"], ids["content"]],
             "version": 1, "element_id": "5:6e7e:42"}]}
        assert d.ask(first)["err"] == "ok"
        t1, l1 = tenant(nx, ids), link(nx, ids)
        assert t1["sync_status"] == l1["sync_status"] == "SUCCESS"
        xmin_t = nx.scalar(f"SELECT xmin FROM tenants WHERE id = '{ids['tenant']}'")
        xmin_l = nx.scalar(f"SELECT xmin FROM thread_content WHERE thread_id = '{ids['thread']}' "
                           f"AND content_id = '{ids['content']}'")
        assert d.ask(first)["err"] == "ok"
        assert nx.scalar(f"SELECT xmin FROM tenants WHERE id = '{ids['tenant']}'") == xmin_t, \
            "a repeated SUCCESS rewrote the tenant row"
        assert nx.scalar(f"SELECT xmin FROM thread_content WHERE thread_id = '{ids['thread']}' "
                         f"AND content_id = '{ids['content']}'") == xmin_l, \
            "a repeated SUCCESS rewrote the link row"
        assert tenant(nx, ids) == t1 and link(nx, ids) == l1

        # a new element id for the same version is still recorded
        moved = {"rows": [{"table": "thread_content", "outcome": "SUCCESS",
                           "keys": [ids["thread"], ids["content"]], "version": 1,
                           "element_id": "5:6e7e:43"}]}
        assert d.ask(moved)["err"] == "ok"
        assert link(nx, ids)["neo4j_relationship_id"] == "5:6e7e:43"

        nx.psql(f"UPDATE tenants SET name = 'changed' WHERE id = '{ids['tenant']}'")
        t2 = tenant(nx, ids)
        assert (t2["pg_version"], t2["sync_status"]) == (2, "PENDING")
        assert d.ask({"rows": [{"table": "tenants", "outcome": "SUCCESS", "keys": [ids["tenant"]],
                                "version": 2}]})["err"] == "ok"
        t3 = tenant(nx, ids)
        assert (t3["pg_version"], t3["sync_status"]) == (2, "SUCCESS")
        assert t3["last_sync_timestamp"] != t1["last_sync_timestamp"]
    finally:
        d.close()


def test_pg_pipelined_write_commits_while_the_caller_works(clients, nx, pg_rows, reject_trigger):
    """pg_status_send puts the whole write-back on the wire and returns: the
    rows are committed (visible to another session) while the caller is
    still busy, before it reads the outcome with pg_status_wait. A failing
    statement in the pipeline rolls back all of it."""
    ids = pg_rows
    d = pg_driver(clients, nx.env)
    hold_s = 4
    try:
        req = {"hold_ms": hold_s * 1000, "rows": [
            {"table": "tenants", "outcome": "SUCCESS", "keys": [ids["tenant"]], "version": 1},
            {"table": "thread_content", "outcome": "SUCCESS", "keys": [ids["thread"], ids["content"]],
             "version": 1, "element_id": "5:6e7e:77"}]}
        t0 = time.time()
        d.send(req)
        wait_until(lambda: link(nx, ids)["sync_status"] == "SUCCESS", hold_s * 2, interval=0.05,
                   what="the pipelined write-back committed")
        seen_s = time.time() - t0
        ans = d.answer()  # after the hold
        assert ans["err"] == "ok", ans
        assert seen_s < hold_s - 1, f"committed only after {seen_s:.1f} s: not while the caller worked"
        assert tenant(nx, ids)["sync_status"] == "SUCCESS"
        assert link(nx, ids)["neo4j_relationship_id"] == "5:6e7e:77"
        print(f"\npipelined write-back visible after {seen_s * 1000:.0f} ms, send {ans['send_ms']:.1f} ms, "
              f"wait after the hold {ans['wait_ms']:.1f} ms")

        # one transaction: FAILED for tenant2 would pass, the rejected row fails the pipeline
        bad = {"hold_ms": 0, "rows": [
            {"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant2"]], "error": "e"},
            {"table": "thread_content", "outcome": "FAILED", "keys": [ids["thread"], ids["content"]],
             "error": reject_trigger}]}
        ans = d.ask(bad)
        assert ans["err"] != "ok" and "thread_content" in ans["errstr"], ans
        assert tenant(nx, ids, "tenant2")["sync_status"] == "PENDING"
        # and the writer is usable again
        assert d.ask({"hold_ms": 0, "rows": [{"table": "tenants", "outcome": "FAILED",
                                              "keys": [ids["tenant2"]], "error": "e"}]})["err"] == "ok"
        assert tenant(nx, ids, "tenant2")["sync_status"] == "FAILED"
    finally:
        d.close()


def test_pg_version_guard_keeps_stale_success_out(clients, nx, pg_rows):
    """A SUCCESS for an older pg_version leaves a newer row untouched; the
    current version applies; FAILED applies whatever the version; in one
    batch, FAILED of an old event and SUCCESS of the current leave SUCCESS."""
    ids = pg_rows
    nx.psql(f"UPDATE tenants SET name = 'renamed' WHERE id = '{ids['tenant']}'")
    t0 = tenant(nx, ids)
    assert t0["pg_version"] == 2
    d = pg_driver(clients, nx.env)
    try:
        ans = d.ask({"rows": [{"table": "tenants", "outcome": "SUCCESS", "keys": [ids["tenant"]],
                               "version": 1}]})
        assert ans["err"] == "ok", ans
        assert tenant(nx, ids) == t0, "a stale SUCCESS changed the row"

        ans = d.ask({"rows": [{"table": "tenants", "outcome": "SUCCESS", "keys": [ids["tenant"]],
                               "version": 2}]})
        assert ans["err"] == "ok", ans
        t1 = tenant(nx, ids)
        assert t1["sync_status"] == "SUCCESS" and t1["last_sync_timestamp"] is not None

        ans = d.ask({"rows": [
            {"table": "tenants", "outcome": "SUCCESS", "keys": [ids["tenant"]], "version": 2},
            {"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant"]], "error": "v1 failed"},
        ]})
        assert ans["err"] == "ok", ans
        t2 = tenant(nx, ids)
        assert (t2["sync_status"], t2["sync_attempts"], t2["last_sync_error"]) == ("SUCCESS", 1, None)
        assert t2["pg_version"] == 2
    finally:
        d.close()


AWKWARD_ERRORS = [
    'say "hi"', "back\\slash\\", "{a,b}", "}", "{", ",", "NULL", "null", " padded ", "",
    "it's", 'mixed {"k": [1, 2]} \\" ,}{', "tab\tnew\nline", "unicode é 中文 😀",
]


def test_pg_awkward_error_strings_survive(clients, nx, pg_rows):
    """Reasons with quotes, backslashes, commas, braces, NULL-like words and
    multi-byte text are stored byte for byte (each in a batch of two rows of
    two tables); invalid UTF-8 becomes '?', an over-long reason is cut on a
    character boundary with '...', and a NULL reason stores NULL."""
    ids = pg_rows
    d = pg_driver(clients, nx.env)
    try:
        for err in AWKWARD_ERRORS:
            ans = d.ask({"rows": [
                {"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant"]], "error": err},
                {"table": "thread_content", "outcome": "FAILED", "keys": [ids["thread"], ids["content"]],
                 "error": err + "!"},
            ]})
            assert ans["err"] == "ok", (err, ans)
            assert tenant(nx, ids)["last_sync_error"] == err
            assert link(nx, ids)["last_sync_error"] == err + "!"
        # raw bytes inside the JSON line: cJSON passes them through untouched
        raw = b'{"rows":[{"table":"tenants","outcome":"FAILED","keys":["%s"],"error":"bad \xff\xfe end \xe2\x82"}]}' \
            % ids["tenant"].encode()
        assert d.ask(raw)["err"] == "ok"
        assert tenant(nx, ids)["last_sync_error"] == "bad ?? end ??"
        ans = d.ask({"rows": [{"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant"]],
                               "error": "é" * 3000}]})
        assert ans["err"] == "ok", ans
        assert tenant(nx, ids)["last_sync_error"] == "é" * 1000 + "..."
        ans = d.ask({"rows": [{"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant"]],
                               "error": None}]})
        assert ans["err"] == "ok", ans
        t = tenant(nx, ids)
        assert t["last_sync_error"] is None
        assert t["sync_attempts"] == len(AWKWARD_ERRORS) + 3
    finally:
        d.close()


def test_pg_rejected_statement_is_permanent_and_writes_nothing(clients, nx, pg_rows, reject_trigger):
    """The server rejects an UPDATE (a trigger raises 22023): PERMANENT, and
    the valid row of the same batch (another table, earlier UPDATE) is
    rolled back with it."""
    ids = pg_rows
    t0 = tenant(nx, ids)
    d = pg_driver(clients, nx.env)
    try:
        ans = d.ask({"rows": [
            {"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant"]], "error": "x"},
            {"table": "thread_content", "outcome": "FAILED", "keys": [ids["thread"], ids["content"]],
             "error": reject_trigger},
        ]})
        assert ans["err"] == "pg_permanent", ans
        assert "22023" in ans["errstr"], ans
        assert tenant(nx, ids) == t0
        # the connection is still good for the next batch
        ans = d.ask({"rows": [{"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant"]],
                               "error": "x"}]})
        assert ans["err"] == "ok", ans
    finally:
        d.close()


def test_pg_unreachable_is_transient(clients, nx):
    d = pg_driver(clients, nx.env, port=free_port())
    try:
        ans = d.ask({"rows": [{"table": "tenants", "outcome": "FAILED",
                               "keys": [str(uuid.uuid4())], "error": "x"}]})
        again = d.ask({"rows": [{"table": "tenants", "outcome": "FAILED",
                                 "keys": [str(uuid.uuid4())], "error": "x"}]})
    finally:
        d.close()
    assert ans["err"] == again["err"] == "pg_transient", (ans, again)
    assert "could not connect" in ans["errstr"]
    assert ans["ms"] < 1000 * SLOW


def test_pg_broken_connection_is_reopened_on_next_call(clients, nx, pg_rows):
    """The server ends the writer's session (pg_terminate_backend): the next
    write fails TRANSIENT with nothing written, the one after reconnects."""
    ids = pg_rows
    app = f"nexus-client-test-{uuid.uuid4().hex[:8]}"
    d = pg_driver(clients, nx.env, app=app)
    row = {"table": "tenants", "outcome": "FAILED", "keys": [ids["tenant"]], "error": "e"}
    try:
        assert d.ask({"rows": [row]})["err"] == "ok"
        killed = nx.scalar(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           f"WHERE application_name = '{app}'")
        assert killed == "1"
        ans = d.ask({"rows": [row]})
        assert ans["err"] == "pg_transient", ans
        assert tenant(nx, ids)["sync_attempts"] == 1
        ans = d.ask({"rows": [row]})
        assert ans["err"] == "ok", ans
        assert tenant(nx, ids)["sync_attempts"] == 2
    finally:
        d.close()


# --- DLQ ------------------------------------------------------------------

def dlq_driver(clients, bootstrap, topic="nexus.dlq", *props):
    return Driver([os.path.join(clients, "dlq_client"), topic, "clienttest",
                   f"bootstrap.servers={bootstrap}", *props])


@pytest.fixture
def scratch_topic(clients, nx):
    """A two-partition topic of its own (the broker does not auto-create),
    deleted afterwards, so nothing is left in nexus.dlq and every message
    read back is the test's, from offset 0."""
    topic = f"nexus.clienttest.{uuid.uuid4().hex[:12]}"
    admin = os.path.join(clients, "kafka_admin")
    boot = nx.env["NEXUS_KAFKA_BOOTSTRAP"]
    p = subprocess.run([admin, boot, "create", topic, "2"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    yield topic
    p = subprocess.run([admin, boot, "delete", topic], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def read_all(nx, topic, partitions=2):
    """Every message of the topic, as kcat -J dicts."""
    msgs = []
    for p in range(partitions):
        out = nx.kcat("-C", "-t", topic, "-p", str(p), "-o", "beginning", "-e", "-J", "-q")
        msgs += [json.loads(line) for line in out.splitlines() if line.strip()]
    return msgs


def test_dlq_two_dead_letters_read_back_exactly(clients, nx, scratch_topic):
    """Two dead letters: flush reports both acknowledged, and read back with
    kcat, their key, value and headers (the source's own first, then
    nexus.*) are exact, and there are exactly two."""
    run = uuid.uuid4().hex[:8]
    letters = [
        {"op": "send", "class": "neo4j_permanent",
         "reason": 'Neo.ClientError.Statement.SyntaxError: bad "x" {y}',
         "src": {"topic": "nexus.high.thread", "partition": 3, "offset": 123456789012,
                 "key": f'{{"id":"k1-{run}"}}', "value": '{"payload":{"op":"c","after":{"id":"é"}}}',
                 "headers": [["traceparent", "00-abc-def-01"], ["x-empty", ""]]}},
        {"op": "send", "class": "schema", "reason": "unknown table foo",
         "src": {"topic": "nexus.low.message", "partition": 0, "offset": 0,
                 "key": f"k2-{run}", "value": "not json at all, \u00fc"}},
    ]
    t_start = datetime.now(timezone.utc)
    d = dlq_driver(clients, nx.env["NEXUS_KAFKA_BOOTSTRAP"], scratch_topic)
    try:
        for letter in letters:
            assert d.ask(letter)["err"] == "ok"
        ans = d.ask({"op": "flush", "timeout_ms": 30000})
    finally:
        d.close()
    assert ans["err"] == "ok", ans
    assert ans["sent"] == 2
    msgs = read_all(nx, scratch_topic)
    assert len(msgs) == 2, msgs
    assert all(m["topic"] == scratch_topic for m in msgs)
    by_key = {m["key"]: m for m in msgs}
    for letter in letters:
        m = by_key[letter["src"]["key"]]
        src = letter["src"]
        assert m["key"] == src["key"]
        assert m["payload"] == src["value"]
        h = m["headers"]
        pairs = list(zip(h[0::2], h[1::2]))
        own = [tuple(x) for x in src.get("headers", [])]
        assert pairs[:len(own)] == own
        ours = dict(pairs[len(own):])
        assert [k for k, _ in pairs[len(own):]] == [
            "nexus.reason", "nexus.error.class", "nexus.source.topic", "nexus.source.partition",
            "nexus.source.offset", "nexus.worker", "nexus.time"]
        assert ours["nexus.reason"] == letter["reason"]
        assert ours["nexus.error.class"] == letter["class"]
        assert ours["nexus.source.topic"] == src["topic"]
        assert ours["nexus.source.partition"] == str(src["partition"])
        assert ours["nexus.source.offset"] == str(src["offset"])
        assert ours["nexus.worker"] == "clienttest"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ours["nexus.time"])
        sent_at = datetime.strptime(ours["nexus.time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs((sent_at - t_start).total_seconds()) < 60


def test_dlq_flush_against_dead_broker_times_out(clients, nx):
    """No broker: sending still queues, flush fails with kafka after its
    timeout, and so does the next batch's flush."""
    d = dlq_driver(clients, f"127.0.0.1:{free_port()}")
    letter = {"op": "send", "class": "parse", "reason": "r",
              "src": {"topic": "t", "partition": 0, "offset": 1, "key": "k", "value": "v"}}
    try:
        assert d.ask(letter)["err"] == "ok"
        ans = d.ask({"op": "flush", "timeout_ms": 1000})
        assert ans["err"] == "kafka", ans
        assert "timed out" in ans["errstr"]
        assert 950 <= ans["ms"] < 1000 + 2000 * SLOW, ans
        assert d.ask(letter)["err"] == "ok"
        ans = d.ask({"op": "flush", "timeout_ms": 500})
        assert ans["err"] == "kafka", ans
        assert ans["sent"] == 0
    finally:
        d.close()


def test_dlq_bad_property_is_a_config_error(clients, nx):
    p = subprocess.run([os.path.join(clients, "dlq_client"), "nexus.dlq", "w",
                        f"bootstrap.servers={nx.env['NEXUS_KAFKA_BOOTSTRAP']}", "no.such.property=1"],
                       input="", capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "config: kafka property no.such.property" in p.stderr
