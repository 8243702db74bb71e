"""Debezium snapshots: the initial snapshot (op r) of a database that already
holds 100k+ rows converges an empty graph, and an incremental snapshot of
one table, asked for through the signal table, re-reads it (restoring a
node deleted straight from Neo4j) and leaves the graph as it was."""
import json
import os
import random
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from nexus import (track, ROOT, new_id as U, Worker, empty_graph, end_offsets, run_tool, save_end_offsets,
                   wait_group_caught_up, wait_until)

WORKERS = ["org", "thread", "content_item", "tag", "message"]

NODES = {"tenants": "Tenant", "users": "User", "programs": "Program", "projects": "Project",
         "threads": "Thread", "content_items": "ContentItem", "text_content": "Text", "code_content": "Code",
         "content_chunks": "ContentChunk", "tags": "Tag", "messages": "Message"}
LINKS = {"project_memberships": "HAS_MEMBER", "thread_relationships": "PARENT_OF", "content_tags": "TAGGED_WITH",
         "message_relationships": "REPLIED_WITH", "message_context_items": "USED_CONTEXT"}
PARENTS = {"users": "HAS_USER", "programs": "HAS_PROGRAM", "projects": "HAS_PROJECT", "threads": "HAS_THREAD",
           "tags": "HAS_TAG", "messages": "CONTAINS_MESSAGE", "content_chunks": "HAS_CHUNK"}

def connect(nx, method, path, body=None, ok=(200, 201, 202, 204)):
    url = nx.env["NEXUS_CONNECT_URL"].rstrip("/") + path.replace("CONNECTOR", nx.env["NEXUS_CONNECTOR"])
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read().decode()
            code = resp.status
    except urllib.error.HTTPError as e:
        text, code = e.read().decode(), e.code
    assert code in ok, f"{method} {path}: HTTP {code} {text[:500]}"
    return json.loads(text) if text.strip() else None


def connector_state(nx):
    s = connect(nx, "GET", "/connectors/CONNECTOR/status", ok=(200, 404))
    if not s or "connector" not in s:
        return None
    tasks = [t["state"] for t in s.get("tasks", [])]
    return s["connector"]["state"], tasks


def save_ends(nx, workdir, workers=WORKERS):
    """The end offsets of each worker's lanes now, read from Kafka and saved
    as workdir/<worker>-ends.json: {worker: {(topic, partition): offset}}."""
    return {name: save_end_offsets(nx, name, os.path.join(str(workdir), f"{name}-ends.json")) for name in workers}


def fresh_groups_at(nx, workdir, tag, workers=WORKERS):
    """A new group per worker whose committed offsets are those save_ends
    wrote to workdir (nexus-replay --from-file): they read every message
    written after that call."""
    groups = {}
    for name in workers:
        groups[name] = f"snap-{tag}-{name}"
        p = run_tool(nx, "nexus-replay", "--worker", name, "--group", groups[name], "--from-file",
                     os.path.join(str(workdir), f"{name}-ends.json"), "--execute")
        assert p.returncode == 0, p.stdout + p.stderr
    return groups


def pg_counts(nx):
    out = {}
    for table in list(NODES) + list(LINKS) + ["thread_content"]:
        out[table] = int(nx.scalar(f"SELECT count(*) FROM {table}"))
    return out


def graph_counts(nx):
    out = {}
    for table, label in NODES.items():
        out[table] = nx.cypher_value(f"MATCH (n:{label}) RETURN count(n)")
    for table, rel in LINKS.items():
        out[table] = nx.cypher_value(f"MATCH ()-[r:{rel}]->() RETURN count(r)")
    out["thread_content"] = nx.cypher_value("MATCH ()-[r:INCLUDES]->() WHERE r.validTo IS NULL RETURN count(r)")
    return out


@pytest.mark.slow
def test_initial_snapshot_of_100k_rows_converges_an_empty_graph(nx, tmp_path):
    """The connector is removed with its offsets and its slot, 120k rows are
    loaded, then the connector is registered again (snapshot.mode=initial):
    its op r events rebuild an emptied graph, count for count."""
    cfg = connect(nx, "GET", "/connectors/CONNECTOR/config")
    assert cfg["snapshot.mode"] == "initial"
    slot = cfg["slot.name"]
    # 1. no connector: stopped, offsets deleted, removed, slot dropped
    connect(nx, "PUT", "/connectors/CONNECTOR/stop")
    wait_until(lambda: (connector_state(nx) or ("",))[0] == "STOPPED", 120, what="connector stopped")
    connect(nx, "DELETE", "/connectors/CONNECTOR/offsets")
    connect(nx, "DELETE", "/connectors/CONNECTOR")
    wait_until(lambda: nx.scalar(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' "
                                 f"AND active") == "0", 120, what="slot released")
    nx.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots WHERE slot_name = '{slot}'")
    try:
        # 2. the data, loaded while nothing captures it
        scale = os.environ.get("NEXUS_SNAPSHOT_SCALE", "1.0")
        seed = str(random.randint(1000, 10 ** 9))
        gen = subprocess.run([os.path.join(ROOT, "tools", "nexus-datagen"), "load", "--scale", scale, "--seed", seed],
                             capture_output=True, text=True, timeout=600)
        assert gen.returncode == 0, gen.stderr
        t_load = time.time()
        nx.psql(gen.stdout)
        load_s = time.time() - t_load
        empty_graph(nx)
        want = pg_counts(nx)
        rows = sum(want.values())
        assert rows >= 100000, want
    finally:
        # 3. the connector again, as the stack registers it; the groups
        # start at the lane offsets before it
        starts = save_ends(nx, tmp_path)
        t0_ms = int(time.time() * 1000)
        connect(nx, "PUT", "/connectors/CONNECTOR/config", cfg)
    wait_until(lambda: connector_state(nx) == ("RUNNING", ["RUNNING"]), 300, what="connector running")
    groups = fresh_groups_at(nx, tmp_path, uuid.uuid4().hex[:8])
    ws = []
    for name in WORKERS:
        w = Worker(nx, name, str(tmp_path / name), groups[name])
        track(w)
        ws.append(w.start())
    wait_until(lambda: graph_counts(nx) == want, 900, interval=5.0, what="graph counts equal to PostgreSQL")
    converge_s = time.time() - t0_ms / 1000
    for name in WORKERS:
        wait_group_caught_up(nx, name, groups[name], timeout=600)
    for w in ws:
        assert w.stop() == 0
    got = graph_counts(nx)
    assert got == want
    assert sum(w.total("dlq") for w in ws) == 0
    # parent relationships, and a sample of rows property by property
    for table, rel in PARENTS.items():
        assert nx.cypher_value(f"MATCH ()-[r:{rel}]->() RETURN count(r)") == want[table], rel
    sample = nx.rows("SELECT id, title, pg_version FROM content_items ORDER BY random() LIMIT 50")
    graph = {r["id"]: (r["t"], r["v"]) for r in nx.cypher(
        "MATCH (c:ContentItem) WHERE c.id IN $ids RETURN c.id AS id, c.title AS t, c.pgVersion AS v",
        {"ids": [r[0] for r in sample]})}
    assert graph == {r[0]: (r[1], int(r[2])) for r in sample}
    snap = [m for m in nx.consume_all("nexus.normal.tag", timeout=300)
            if m["offset"] >= starts["tag"].get(("nexus.normal.tag", m["partition"]), 0)
            and m.get("payload") and '"op":"r"' in m["payload"]]
    assert len(snap) >= want["tags"] + want["content_tags"]
    print(f"\ninitial snapshot: {rows} rows (loaded in {load_s:.0f} s); graph converged {converge_s:.0f} s after "
          f"registering the connector: {rows / converge_s:.0f} rows/s")


def writer_psql(nx, sql):
    e = dict(os.environ, PGPASSWORD=nx.env["NEXUS_WRITER_PASSWORD"])
    p = subprocess.run(["psql", "-h", nx.env["NEXUS_PG_HOST"], "-p", nx.env["NEXUS_PG_PORT"],
                        "-U", nx.env.get("NEXUS_WRITER_USER", "nexus_writer"), "-d", nx.env["NEXUS_PG_DB"],
                        "-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql], env=e, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr


def tag_props(nx, ids):
    rows = nx.cypher("MATCH (p:Project)-[:HAS_TAG]->(t:Tag) WHERE t.id IN $ids "
                     "RETURN p.id AS p, properties(t) AS t", {"ids": ids})
    out = {}
    for r in rows:
        props = dict(r["t"])
        props.pop("srcLsn")  # the snapshot's read position, newer by design
        out[props["id"]] = (r["p"], json.dumps(props, sort_keys=True))
    return out


def test_incremental_snapshot_through_the_signal_table(nx, project, tmp_path):
    topic = "nexus.normal.tag"
    save_ends(nx, tmp_path, ["tag"])
    group = fresh_groups_at(nx, tmp_path, uuid.uuid4().hex[:8], ["tag"])["tag"]
    w = Worker(nx, "tag", str(tmp_path / "tag"), group)
    track(w)
    w.start()
    ids = [U() for _ in range(5)]
    nx.psql("INSERT INTO tags (id, project_id, tenant_id, name) VALUES " + ", ".join(
        f"('{i}', '{project['project']}', '{project['tenant']}', 'incr-{k}')" for k, i in enumerate(ids)))
    wait_until(lambda: len(tag_props(nx, ids)) == 5, 120, what="tags applied")
    wait_group_caught_up(nx, "tag", group)
    before = tag_props(nx, ids)
    # drift: one node deleted straight from Neo4j
    nx.cypher("MATCH (t:Tag {id: $id}) DETACH DELETE t", {"id": ids[0]})
    assert len(tag_props(nx, ids)) == 4
    before_signal = end_offsets(nx, [topic])
    total = int(nx.scalar("SELECT count(*) FROM tags"))
    writer_psql(nx, "INSERT INTO nexus_signal (id, type, data) VALUES ('" + U() + "', 'execute-snapshot', "
                "'{\"data-collections\": [\"public.tags\"], \"type\": \"incremental\"}')")

    def reread():
        seen = set()
        for m in nx.consume_all(topic, timeout=120):
            if m["offset"] < before_signal[(topic, m["partition"])] or not m.get("payload"):
                continue
            ev = json.loads(m["payload"])
            if ev.get("op") == "r" and ev["source"].get("snapshot") == "incremental":
                seen.add(ev["after"]["id"])
        return seen if len(seen) >= total else None
    seen = wait_until(reread, 300, interval=2.0, what="every tag read again as an op r event")
    assert set(ids) <= seen
    wait_until(lambda: len(tag_props(nx, ids)) == 5, 300, what="the deleted node back")
    wait_group_caught_up(nx, "tag", group)
    assert w.stop() == 0
    assert tag_props(nx, ids) == before
    assert w.total("dlq") == 0
    # the signal rows themselves never reach a lane topic
    assert not any("nexus_signal" in (m.get("payload") or "") for m in nx.consume_all(topic, timeout=120)
                   if m["offset"] >= before_signal[(topic, m["partition"])])
