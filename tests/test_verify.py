"""nexus-verify against the real stack: a data set from tools/nexus-datagen
synced by the five workers compares clean; drift injected straight into
Neo4j, and into PostgreSQL with capture off, is found with exact counts;
--repair fixes it and a second run is clean; --table limits the scope;
memory stays bounded when the data grows tenfold.

PostgreSQL drift "with capture off": the tables are dropped from the
nexus_pub publication for the changes and added back afterwards. Logical
decoding reads the publication through the catalog as it was at each
change's WAL position, so Debezium never emits those changes (and the
workers never see them) although they are committed; the tables then
capture normally again. This is what happens when someone edits rows
while a table is left out of the publication."""
import json
import os
import random
import subprocess
import uuid

import pytest

from nexus import BIN, ROOT, Worker, new_id as U, wait_until

WORKERS = ["org", "thread", "content_item", "tag", "message"]
VERIFY = os.path.join(BIN, "nexus-verify")
COUNT_KEYS = ["missing", "extra", "mismatched", "parent_missing", "parent_extra"]


def run_verify(nx, *args, timeout=600):
    """(exit code, stdout, stderr) of one nexus-verify run."""
    env = nx.worker_env()
    p = subprocess.Popen([VERIFY, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def run_verify_rss(nx, *args):
    """Exit code and peak RSS (KB) of one run, as the tool reports it from
    its own VmHWM (ru_maxrss of a child would include the forking Python's
    peak, which Linux carries across exec)."""
    rc, out, err = run_verify(nx, "--json", *args)
    assert rc in (0, 1), err
    return rc, err, json.loads(out)["peak_rss_kb"]


def verify_json(nx, *args):
    rc, out, err = run_verify(nx, "--json", *args)
    assert rc in (0, 1), f"nexus-verify failed ({rc}): {err}"
    return rc, json.loads(out)


def by_table(doc):
    return {t["table"]: t for t in doc["tables"]}


def divergences(doc):
    return {t["table"]: {k: t[k] for k in COUNT_KEYS if t[k]} for t in doc["tables"]
            if any(t[k] for k in COUNT_KEYS)}


def load_datagen(nx, scale):
    """A fresh data set (own seed; slugs made unique); returns its tenant ids."""
    seed = random.randrange(1 << 30)
    gen = subprocess.run(["python3", os.path.join(ROOT, "tools", "nexus-datagen"), "--scale", str(scale),
                          "--seed", str(seed), "load"], capture_output=True, text=True, check=True).stdout
    tag = uuid.uuid4().hex[:8]
    gen = gen.replace("'tenant-", f"'tenant-{tag}-")
    nx.psql(gen)
    return tag


@pytest.fixture(scope="module")
def workers(nx, tmp_path_factory):
    base = tmp_path_factory.mktemp("verify-workers")
    group = f"verify-{uuid.uuid4().hex[:8]}"
    ws = [Worker(nx, w, str(base / w), f"{group}-{w}", NEXUS_BATCH_MS=20).start() for w in WORKERS]
    yield ws
    for w in ws:
        assert w.stop() == 0, w.log_text()[-3000:]


def caught_up(workers):
    for w in workers:
        w.wait_caught_up(timeout=600, quiet_s=2.0)


@pytest.fixture(scope="module")
def synced(nx, workers):
    """The small data set loaded and synced; the graph made clean.

    The shared graph may hold drift other test files left on purpose (made-up
    events, direct edits). The first run must not find anything in this
    module's own data: that proves the workers' output compares equal to
    PostgreSQL through verify's conversions. Whatever else it finds is
    repaired so the drift tests start from a clean graph."""
    tag = load_datagen(nx, 0.01)
    caught_up(workers)
    tenants = f"(SELECT id FROM tenants WHERE slug LIKE 'tenant-{tag}-%')"
    mine = set(r[0] for r in nx.rows(
        f"SELECT id::text FROM tenants WHERE id IN {tenants} "
        f"UNION ALL SELECT id::text FROM content_items WHERE tenant_id IN {tenants} "
        f"UNION ALL SELECT id::text FROM threads WHERE tenant_id IN {tenants} "
        f"UNION ALL SELECT id::text FROM messages WHERE tenant_id IN {tenants} "
        f"UNION ALL SELECT id::text FROM tags WHERE tenant_id IN {tenants} "
        f"UNION ALL SELECT id::text FROM users WHERE tenant_id IN {tenants} "
        f"UNION ALL SELECT c.id::text FROM content_chunks c JOIN content_items i ON i.id = c.content_id "
        f"WHERE i.tenant_id IN {tenants}"))
    assert len(mine) > 100
    rc, doc = verify_json(nx, "--limit-report", "100000")
    if rc != 0:
        for t in doc["tables"]:
            for ex in t["examples"]:
                assert ex["key"].split("|")[0] not in mine, f"{t['table']}: {ex}"
        rc, out, err = run_verify(nx, "--repair")
        assert rc == 0, out + err
    rc, doc = verify_json(nx)
    assert rc == 0, divergences(doc)
    return doc


def pick(nx, sql, n):
    rows = [r[0] if len(r) == 1 else tuple(r) for r in nx.rows(sql)]
    assert len(rows) >= n, f"need {n} rows from: {sql}"
    return rows[:n]


def test_clean_graph_exits_0_and_reports_every_table(nx, synced):
    tables = by_table(synced)
    captured = [line.split()[0] for line in subprocess.run(
        [os.path.join(BIN, "nexus-schema"), "describe"], capture_output=True, text=True,
        check=True, cwd=ROOT).stdout.splitlines() if line.split()[1] != "none"]
    assert sorted(tables) == sorted(captured)
    for name, t in tables.items():
        assert t["rows"] == t["graph"], t
        assert t["rows"] > 0, name
    assert synced["totals"]["divergences"] == 0
    assert synced["clean"] is True and synced["mode"] == "dry-run"
    rc, out, err = run_verify(nx)
    assert rc == 0, out + err
    assert out.strip().endswith("clean: no divergence")
    assert "content_chunks: rows " in out


def test_drift_is_found_exactly_then_repaired(nx, synced, workers):
    # --- drift straight into Neo4j -------------------------------------
    chunks = pick(nx, "SELECT id::text FROM content_chunks ORDER BY random() LIMIT 4", 4)
    nx.cypher("MATCH (c:ContentChunk) WHERE c.id IN $ids DETACH DELETE c", {"ids": chunks[:3]})
    nx.cypher("MATCH (:ContentItem)-[r:HAS_CHUNK]->(c:ContentChunk {id: $id}) DELETE r", {"id": chunks[3]})
    threads = pick(nx, "SELECT id::text FROM threads ORDER BY random() LIMIT 20", 5)
    nx.cypher("MATCH (t:Thread) WHERE t.id IN $ids SET t.title = 'drifted'", {"ids": threads[:2]})
    t3, t4 = pick(nx, """SELECT a.id::text, b.id::text FROM threads a, threads b WHERE a.id <> b.id
        AND NOT EXISTS (SELECT 1 FROM thread_relationships r WHERE r.parent_thread_id = a.id
                        AND r.child_thread_id = b.id) LIMIT 1""", 1)[0]
    nx.cypher("MATCH (a:Thread {id: $a}), (b:Thread {id: $b}) CREATE (a)-[:PARENT_OF {srcLsn: 1}]->(b)",
              {"a": t3, "b": t4})
    nx.cypher("MATCH (t:Thread {id: $id}) CREATE (:Project {id: $p})-[:HAS_THREAD]->(t)",
              {"id": threads[4], "p": U()})
    msg = pick(nx, "SELECT id::text FROM messages ORDER BY random() LIMIT 1", 1)[0]
    nx.cypher("MATCH (m:Message {id: $id}) SET m.createdAt = m.createdAt + duration({seconds: 1})", {"id": msg})
    ci = pick(nx, "SELECT id::text FROM content_items WHERE token_count IS NOT NULL ORDER BY random() LIMIT 1", 1)[0]
    nx.cypher("MATCH (c:ContentItem {id: $id}) SET c.tokenCount = toString(c.tokenCount)", {"id": ci})
    ct = pick(nx, "SELECT content_id::text, tag_id::text FROM content_tags ORDER BY random() LIMIT 3", 3)
    nx.cypher("""MATCH (c:ContentItem {id: $a})-[r:TAGGED_WITH]->(t:Tag {id: $b})
                 CREATE (c)-[copy:TAGGED_WITH]->(t) SET copy = properties(r)""",
              {"a": ct[0][0], "b": ct[0][1]})
    stray_tag, bare_tag = U(), U()
    nx.cypher("CREATE (:Tag {id: $s, name: 'stray', srcLsn: 1, pgVersion: 1}), (:Tag {id: $b})",
              {"s": stray_tag, "b": bare_tag})
    tc = pick(nx, "SELECT thread_id::text, content_id::text FROM thread_content ORDER BY random() LIMIT 2", 2)
    for a, b in tc:
        nx.cypher("""MATCH (:Thread {id: $a})-[r:INCLUDES]->(:ContentItem {id: $b})
                     WHERE r.validTo IS NULL DELETE r""", {"a": a, "b": b})
    mr = pick(nx, "SELECT source_message_id::text, target_message_id::text FROM message_relationships "
                  "ORDER BY random() LIMIT 1", 1)[0]
    nx.cypher("MATCH (:Message {id: $a})-[r:REPLIED_WITH]->(:Message {id: $b}) DELETE r",
              {"a": mr[0], "b": mr[1]})

    # --- drift in PostgreSQL that capture never sees -------------------
    tag_upd = pick(nx, "SELECT id::text FROM tags ORDER BY random() LIMIT 1", 1)[0]
    project, tenant = nx.rows(f"SELECT project_id::text, tenant_id::text FROM tags WHERE id = '{tag_upd}'")[0]
    new_tag, renamed = U(), f"renamed behind capture {U()[:8]}"
    try:
        nx.psql("ALTER PUBLICATION nexus_pub DROP TABLE tags, content_tags")
        nx.psql(f"""BEGIN;
            UPDATE tags SET name = '{renamed}' WHERE id = '{tag_upd}';
            INSERT INTO tags (id, project_id, tenant_id, name) VALUES ('{new_tag}', '{project}', '{tenant}', 'unseen {new_tag}');
            DELETE FROM content_tags WHERE content_id = '{ct[1][0]}' AND tag_id = '{ct[1][1]}';
            UPDATE content_tags SET created_at = created_at + interval '1 day'
              WHERE content_id = '{ct[2][0]}' AND tag_id = '{ct[2][1]}';
            COMMIT;""")
    finally:
        nx.psql("ALTER PUBLICATION nexus_pub ADD TABLE tags, content_tags")
    # a captured change after the hole: the tag worker keeps working, and
    # once it applied this one, it has seen everything it ever will
    marker = U()
    nx.psql(f"INSERT INTO tags (id, project_id, tenant_id, name) VALUES ('{marker}', '{project}', '{tenant}', 'marker {marker}')")
    wait_until(lambda: nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN t.name", {"id": marker}) == f"marker {marker}",
               300, what="marker tag synced")
    caught_up(workers)
    assert nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN count(t)", {"id": new_tag}) == 0

    expected = {
        "content_chunks": {"missing": 3, "parent_missing": 1},
        "threads": {"mismatched": 2, "parent_extra": 1},
        "messages": {"mismatched": 1},
        "content_items": {"mismatched": 1},
        "thread_relationships": {"extra": 1},
        "content_tags": {"extra": 2, "mismatched": 1},
        "tags": {"extra": 1, "missing": 1, "mismatched": 1},
        "thread_content": {"missing": 2},
        "message_relationships": {"missing": 1},
    }
    rc, doc = verify_json(nx, "--limit-report", "50")
    assert rc == 1
    assert divergences(doc) == expected
    t = by_table(doc)
    assert t["tags"]["placeholders"] >= 1
    assert t["threads"]["mismatched_properties"] == 2
    assert t["content_tags"]["mismatched_properties"] == 1
    assert doc["totals"]["divergences"] == sum(sum(v.values()) for v in expected.values())
    ex = {(e["kind"], e["key"], e.get("property")): e for e in t["threads"]["examples"]}
    e = ex[("mismatch", threads[0], "title")]
    assert e["neo4j"] == '"drifted"'
    title = nx.scalar(f"SELECT title FROM threads WHERE id = '{threads[0]}'")
    assert e["postgres"] == json.dumps(title)
    e = next(e for e in t["content_items"]["examples"] if e["kind"] == "mismatch")
    assert e["property"] == "tokenCount" and "STRING" in e["neo4j"]
    e = next(e for e in t["messages"]["examples"] if e["kind"] == "mismatch")
    assert e["property"] == "createdAt" and e["postgres"] != e["neo4j"]
    kinds = {(e["kind"], e["key"]) for e in t["content_chunks"]["examples"]}
    assert {("missing", c) for c in chunks[:3]} <= kinds
    assert ("parent_missing", chunks[3]) in kinds
    assert ("extra", stray_tag) in {(e["kind"], e["key"]) for e in t["tags"]["examples"]}

    # --table limits the scope
    rc, only = verify_json(nx, "--table", "tags", "--table", "thread_content")
    assert rc == 1
    assert [x["table"] for x in only["tables"]] == ["tags", "thread_content"]
    assert divergences(only) == {"tags": expected["tags"], "thread_content": expected["thread_content"]}
    rc, only = verify_json(nx, "--table", "projects")
    assert rc == 0 and divergences(only) == {}

    # --- repair, then a clean second run ---------------------------------
    rc, rep = verify_json(nx, "--repair", "--chunk", "50")
    assert rc == 0, (divergences(rep), rep.get("recheck") and divergences(rep["recheck"]))
    assert rep["mode"] == "repair" and rep["clean"] is True
    assert divergences(rep) == expected
    assert rep["totals"]["not_repaired"] == 0
    assert rep["recheck"]["totals"]["divergences"] == 0
    rc, out, err = run_verify(nx)
    assert rc == 0, out + err

    # the graph holds PostgreSQL's values again
    for c in chunks[:3]:
        text = nx.scalar(f"SELECT chunk_text FROM content_chunks WHERE id = '{c}'")
        assert nx.cypher_value("MATCH (:ContentItem)-[:HAS_CHUNK]->(c:ContentChunk {id: $id}) RETURN c.text",
                               {"id": c}) == text
    assert nx.cypher_value("MATCH (t:Thread {id: $id}) RETURN t.title", {"id": threads[0]}) == title
    assert nx.cypher_value("MATCH (n:Tag {id: $id}) RETURN count(n)", {"id": stray_tag}) == 0
    assert nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN t.name", {"id": tag_upd}) == renamed
    assert nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN t.name", {"id": new_tag}) == f"unseen {new_tag}"
    assert nx.cypher_value("MATCH (:ContentItem {id: $a})-[r:TAGGED_WITH]->(:Tag {id: $b}) RETURN count(r)",
                           {"a": ct[0][0], "b": ct[0][1]}) == 1
    assert nx.cypher_value("MATCH (:ContentItem {id: $a})-[r:TAGGED_WITH]->(:Tag {id: $b}) RETURN count(r)",
                           {"a": ct[1][0], "b": ct[1][1]}) == 0
    for a, b in tc:
        assert nx.cypher_value("""MATCH (:Thread {id: $a})-[r:INCLUDES]->(:ContentItem {id: $b})
                                  WHERE r.validTo IS NULL RETURN count(r)""", {"a": a, "b": b}) == 1
    assert nx.cypher_value("MATCH (c:ContentItem {id: $id}) RETURN c.tokenCount", {"id": ci}) == \
        int(nx.scalar(f"SELECT token_count FROM content_items WHERE id = '{ci}'"))


def test_repair_never_overwrites_a_newer_graph_state(nx, synced, workers):
    """A repair row carries the srcLsn it saw and the row's pg_version: a
    graph element that moved on to a newer version is left alone."""
    tid = pick(nx, "SELECT id::text FROM threads ORDER BY random() LIMIT 1", 1)[0]
    # the graph claims a newer version than PostgreSQL has
    nx.cypher("MATCH (t:Thread {id: $id}) SET t.title = 'newer', t.pgVersion = t.pgVersion + 100", {"id": tid})
    rc, rep = verify_json(nx, "--repair", "--table", "threads")
    assert rc == 1
    t = by_table(rep)["threads"]
    assert t["mismatched"] == 1 and t["not_repaired"] == 1 and t["repaired"] == 0
    assert by_table(rep["recheck"])["threads"]["mismatched"] == 1
    assert nx.cypher_value("MATCH (t:Thread {id: $id}) RETURN t.title", {"id": tid}) == "newer"
    # once PostgreSQL really moves past it, the worker brings the row over
    nx.psql(f"UPDATE threads SET title = 'final' WHERE id = '{tid}'")
    wait_until(lambda: nx.cypher_value("MATCH (t:Thread {id: $id}) RETURN t.title", {"id": tid}) == "final",
               300, what="thread update synced")
    caught_up(workers)
    rc, out, err = run_verify(nx, "--table", "threads")
    assert rc == 0, out + err


def test_usage_errors_exit_2(nx):
    for args in (["--table", "no_such_table"], ["--table", "knowledge_graph_configurations"],
                 ["--chunk", "0"], ["--dry-run", "--repair"], ["--bogus"]):
        rc, out, err = run_verify(nx, *args)
        assert rc == 2, (args, out, err)
        assert err.strip(), args
    env = nx.worker_env(NEXUS_NEO4J_URL="http://127.0.0.1:9")
    p = subprocess.run([VERIFY, "--table", "tags"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Neo4j" in p.stderr


def test_memory_stays_bounded_on_a_tenfold_table_set(nx, synced):
    """Peak RSS of a verify run over a small set of tables, then over every
    table (ten times the rows or more): both sides are read in pages of
    --chunk rows and merge-joined, so the peak barely moves and stays under
    a fixed bound."""
    rc, doc = verify_json(nx)
    assert rc == 0, divergences(doc)
    sizes = sorted((t["rows"] + t["graph"], t["table"]) for t in doc["tables"])
    total = sum(n for n, _ in sizes)
    small, small_rows = [], 0
    for n, name in sizes:
        if small_rows + n > total // 10:
            break
        small.append(name)
        small_rows += n
    assert small and total >= 10 * small_rows
    args = [a for name in small for a in ("--table", name)]
    rc, err, rss_small = run_verify_rss(nx, "--chunk", "500", *args)
    assert rc == 0, err
    rc, err, rss_big = run_verify_rss(nx, "--chunk", "500")
    assert rc == 0, err
    print(f"peak RSS: {rss_small} KB over {small_rows} rows+elements ({len(small)} tables), "
          f"{rss_big} KB over {total} ({len(sizes)} tables)")
    assert rss_big < 30 * 1024, rss_big
    assert rss_big - rss_small < 4 * 1024, (rss_small, rss_big)
