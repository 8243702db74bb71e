"""Replay to resync with bin/nexus-replay: it refuses while the group has
members, saves and restores offsets, moves to a time, and a replay of every
lane topic rebuilds an emptied Neo4j exactly, while a replay into the
current graph changes nothing."""
import json
import time
import uuid

import pytest

from nexus import (track, new_id as U, new_tags, Worker, canonical_dump, empty_graph, end_offsets, record_timestamp,
                   run_tool, save_end_offsets, wait_group_caught_up, wait_until)

WORKERS = ["org", "thread", "content_item", "tag", "message"]

def worker(nx, tmp_path, name, group, sub=""):
    w = Worker(nx, name, str(tmp_path / f"{name}{sub}"), group, NEXUS_BATCH_MS=20)
    track(w)
    return w


def replay(nx, *args):
    return run_tool(nx, "nexus-replay", *args)


def saved(nx, path):
    with open(path) as f:
        doc = json.load(f)
    return {(o["topic"], o["partition"]): o["offset"] for o in doc["offsets"]}




def test_refuses_while_the_group_has_members(nx, project, tmp_path):
    group = f"replay-active-{uuid.uuid4().hex[:8]}"
    w = worker(nx, tmp_path, "tag", group).start()
    new_tags(nx, project, 3, "active")
    w.wait_caught_up(timeout=300)
    p = replay(nx, "--worker", "tag", "--group", group, "--to-earliest", "--execute")
    assert p.returncode == 3, p.stdout + p.stderr
    assert f"group {group} is active" in p.stderr and "1 member" in p.stderr
    before = replay(nx, "--worker", "tag", "--group", group, "--save", "-")
    assert before.returncode == 0
    # a dry run shows the move and says it would be refused
    p = replay(nx, "--worker", "tag", "--group", group, "--to-earliest")
    assert p.returncode == 0 and "would be refused" in p.stdout and "dry run" in p.stdout
    assert json.loads(replay(nx, "--worker", "tag", "--group", group, "--save", "-").stdout)["offsets"] == \
        json.loads(before.stdout)["offsets"]
    assert w.stop() == 0
    p = replay(nx, "--worker", "tag", "--group", group, "--to-earliest", "--execute")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "committed the new offsets" in p.stdout


def test_save_and_restore_round_trip(nx, project, tmp_path):
    group = f"replay-save-{uuid.uuid4().hex[:8]}"
    w = worker(nx, tmp_path, "tag", group).start()
    new_tags(nx, project, 8, "save")
    w.wait_caught_up(timeout=300)
    assert w.stop() == 0
    a, b, c = (str(tmp_path / f"{x}.json") for x in "abc")
    assert replay(nx, "--worker", "tag", "--group", group, "--save", a).returncode == 0
    first = saved(nx, a)
    assert len(first) == 4 and all(o is not None and o >= 0 for o in first.values()), first
    assert sum(first.values()) == nx.end_offset_total("nexus.normal.tag")
    p = replay(nx, "--worker", "tag", "--group", group, "--to-earliest", "--execute", "--save", b)
    assert p.returncode == 0, p.stderr
    assert saved(nx, b) == first  # --save wrote the offsets from before the move
    assert replay(nx, "--worker", "tag", "--group", group, "--save", c).returncode == 0
    assert set(saved(nx, c).values()) == {0}
    p = replay(nx, "--worker", "tag", "--group", group, "--from-file", a, "--execute")
    assert p.returncode == 0, p.stderr
    assert replay(nx, "--worker", "tag", "--group", group, "--save", c).returncode == 0
    assert saved(nx, c) == first
    # a group that never committed: saved as null, and put back to nothing
    fresh = f"replay-none-{uuid.uuid4().hex[:8]}"
    assert replay(nx, "--worker", "tag", "--group", fresh, "--save", a).returncode == 0
    assert set(saved(nx, a).values()) == {None}
    assert replay(nx, "--worker", "tag", "--group", fresh, "--to-earliest", "--execute").returncode == 0
    assert replay(nx, "--worker", "tag", "--group", fresh, "--save", c).returncode == 0
    assert set(saved(nx, c).values()) == {0}
    p = replay(nx, "--worker", "tag", "--group", fresh, "--from-file", a, "--execute")
    assert p.returncode == 0, p.stderr
    assert replay(nx, "--worker", "tag", "--group", fresh, "--save", c).returncode == 0
    assert set(saved(nx, c).values()) == {None}


def test_to_time_moves_to_the_first_offset_at_that_time(nx, project, tmp_path):
    topic = "nexus.normal.tag"
    group = f"replay-time-{uuid.uuid4().hex[:8]}"
    end0 = nx.end_offset_total(topic)
    early = new_tags(nx, project, 6, "early")
    wait_until(lambda: nx.end_offset_total(topic) >= end0 + 6, 120, what="early tags in Kafka")
    time.sleep(0.05)  # the late records' timestamps are at least a millisecond later
    before_late = end_offsets(nx, [topic])
    late = new_tags(nx, project, 6, "late")
    wait_until(lambda: nx.end_offset_total(topic) >= end0 + 12, 120, what="late tags in Kafka")
    # the cut: the earliest timestamp Kafka gave a late record (the test's
    # own clock would race the connector's)
    now = end_offsets(nx, [topic])
    cut_ms = min(record_timestamp(nx, topic, p, o) for (_, p), o in before_late.items() if now[(topic, p)] > o)
    expected = {}
    for m in nx.consume_all(topic):
        key = (topic, m["partition"])
        if m["ts"] >= cut_ms and key not in expected:
            expected[key] = m["offset"]
    ends = {}
    out = nx.kcat("-Q", *sum((["-t", f"{topic}:{p}:-1"] for p in range(4)), []))
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[-2] == "offset":
            ends[(topic, int(f[1].strip("[]")))] = int(f[-1])
    for p in range(4):
        expected.setdefault((topic, p), ends[(topic, p)])
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut_ms / 1000)) + f".{cut_ms % 1000:03d}Z"
    for when in (str(cut_ms), iso):
        p = replay(nx, "--worker", "tag", "--group", group, "--to-time", when, "--execute")
        assert p.returncode == 0, p.stdout + p.stderr
        dump = str(tmp_path / "t.json")
        assert replay(nx, "--worker", "tag", "--group", group, "--save", dump).returncode == 0
        assert saved(nx, dump) == expected, (when, p.stdout)
    # the group then applies the late rows, and never saw the early ones
    w = worker(nx, tmp_path, "tag", group).start()
    w.wait_caught_up(timeout=300)
    assert w.stop() == 0
    count = "MATCH (t:Tag) WHERE t.id IN $ids RETURN count(t)"
    assert nx.cypher_value(count, {"ids": late}) == 6
    assert nx.cypher_value(count, {"ids": early}) == 0


def rich_tenant(nx):
    """A tenant with rows in every captured table, then updates and deletes.
    Returns (tenant id, tombstone keys of what was deleted)."""
    t, pg, pj, u1, u2 = U(), U(), U(), U(), U()
    th = [U() for _ in range(3)]
    ci = [U() for _ in range(6)]
    tg = [U() for _ in range(3)]
    ms = [U() for _ in range(6)]
    ch = [U() for _ in range(4)]
    nx.psql(f"""
    INSERT INTO tenants (id, name, slug, settings) VALUES ('{t}', 'rebuild', 'rebuild-{t[:8]}', '{{"a": 1}}');
    INSERT INTO users (id, tenant_id, email, display_name, role, last_login_at) VALUES
      ('{u1}', '{t}', 'a@x.org', 'A O''Brien', 'admin', '2026-01-02 03:04:05.123456'),
      ('{u2}', '{t}', 'b@x.org', 'B', 'member', NULL);
    INSERT INTO programs (id, tenant_id, name) VALUES ('{pg}', '{t}', 'prog');
    INSERT INTO projects (id, program_id, tenant_id, name) VALUES ('{pj}', '{pg}', '{t}', 'proj');
    INSERT INTO project_memberships (project_id, user_id, role) VALUES ('{pj}', '{u1}', 'owner'), ('{pj}', '{u2}', 'viewer');
    INSERT INTO threads (id, project_id, tenant_id, title, created_by) VALUES
      {", ".join(f"('{x}', '{pj}', '{t}', 'thread {k}', '{u1}')" for k, x in enumerate(th))};
    INSERT INTO thread_relationships (parent_thread_id, child_thread_id) VALUES ('{th[0]}', '{th[1]}'), ('{th[0]}', '{th[2]}');
    INSERT INTO content_items (id, tenant_id, project_id, content_type, title) VALUES
      {", ".join(f"('{x}', '{t}', '{pj}', 'text', 'item {k}')" for k, x in enumerate(ci))};
    INSERT INTO text_content (content_id, body, word_count) VALUES ('{ci[0]}', 'hello world', 2), ('{ci[1]}', 'bye', 1);
    INSERT INTO code_content (content_id, language, source, line_count) VALUES ('{ci[2]}', 'c', 'int main;', 1);
    INSERT INTO content_chunks (id, content_id, chunk_index, chunk_text, keywords) VALUES
      {", ".join(f"('{x}', '{ci[0]}', {k}, 'chunk {k}', ARRAY['k{k}', 'x'])" for k, x in enumerate(ch))};
    INSERT INTO tags (id, project_id, tenant_id, name) VALUES
      {", ".join(f"('{x}', '{pj}', '{t}', 'tag {k}')" for k, x in enumerate(tg))};
    INSERT INTO content_tags (content_id, tag_id) VALUES ('{ci[0]}', '{tg[0]}'), ('{ci[1]}', '{tg[0]}'), ('{ci[3]}', '{tg[1]}');
    INSERT INTO thread_content (thread_id, content_id, position) VALUES ('{th[0]}', '{ci[0]}', 1), ('{th[0]}', '{ci[4]}', 2),
      ('{th[1]}', '{ci[1]}', 1);
    INSERT INTO messages (id, thread_id, tenant_id, role, body) VALUES
      {", ".join(f"('{x}', '{th[k % 3]}', '{t}', 'user', 'message {k}')" for k, x in enumerate(ms))};
    INSERT INTO message_relationships (source_message_id, target_message_id) VALUES ('{ms[0]}', '{ms[1]}'), ('{ms[1]}', '{ms[2]}');
    INSERT INTO message_context_items (message_id, content_id, relevance_score) VALUES ('{ms[0]}', '{ci[0]}', 0.75),
      ('{ms[1]}', '{ci[3]}', 0.125);
    """)
    nx.psql(f"""
    UPDATE content_items SET title = 'item 0 edited' WHERE id = '{ci[0]}';
    UPDATE thread_content SET position = 5 WHERE thread_id = '{th[0]}' AND content_id = '{ci[0]}';
    UPDATE message_context_items SET relevance_score = 0.5 WHERE message_id = '{ms[0]}';
    UPDATE messages SET body = 'edited' WHERE id = '{ms[3]}';
    DELETE FROM content_tags WHERE content_id = '{ci[1]}';
    DELETE FROM content_items WHERE id = '{ci[5]}';
    DELETE FROM messages WHERE id = '{ms[5]}';
    DELETE FROM thread_content WHERE thread_id = '{th[1]}';
    UPDATE tags SET name = 'tag renamed' WHERE id = '{tg[2]}';
    """)
    return t, [f"ContentItem/{ci[5]}", f"Message/{ms[5]}"]


def start_all(nx, tmp_path, group, sub):
    """Every worker, each in its own group (as nexus-<worker> by default)."""
    return [worker(nx, tmp_path, name, f"{group}-{name}", sub).start() for name in WORKERS]


def wait_all(nx, ws):
    """Every worker's group has committed every message of its topics."""
    for w in ws:
        wait_group_caught_up(nx, w.name, w.group, timeout=900)


def stop_all(ws):
    for w in ws:
        assert w.stop() == 0


def test_replay_rebuilds_an_empty_graph_and_changes_nothing_in_a_current_one(nx, tmp_path):
    group = f"replay-all-{uuid.uuid4().hex[:8]}"
    ws = start_all(nx, tmp_path, group, "-live")
    tenant, tombs = rich_tenant(nx)
    wait_until(lambda: nx.cypher_value("MATCH (n:Tenant {id: $t})-[*0..6]->(m:Message) RETURN count(DISTINCT m)",
                                       {"t": tenant}) == 5, 300, what="messages applied")
    wait_all(nx, ws)
    live = canonical_dump(nx, tenant, tombs)
    assert sum(line.startswith("rel ") for line in live) >= 20, live
    assert any("NexusTombstone" in line for line in live)
    stop_all(ws)

    # Neo4j as a new database; the group's offsets back to the start
    empty_graph(nx)
    assert nx.cypher_value("MATCH (n) RETURN count(n)") == 0
    for name in WORKERS:
        p = replay(nx, "--worker", name, "--group", f"{group}-{name}", "--to-earliest", "--execute")
        assert p.returncode == 0, p.stdout + p.stderr
    t0 = time.time()
    ws = start_all(nx, tmp_path, group, "-rebuild")
    wait_all(nx, ws)
    rebuild_s = time.time() - t0
    stop_all(ws)
    assert canonical_dump(nx, tenant, tombs) == live
    rows = nx.cypher("SHOW CONSTRAINTS YIELD type, labelsOrTypes RETURN type, labelsOrTypes AS l")
    assert {r["l"][0] for r in rows if r["type"] == "UNIQUENESS"} >= {"Tenant", "Message", "NexusTombstone"}
    rebuilt = canonical_dump(nx)
    events = sum(w.total("consumed") for w in ws)
    print(f"\nrebuild: {events} events, {len(rebuilt)} nodes+relationships, {rebuild_s:.1f} s")

    # replaying into the current graph: same graph, the older events skipped
    for name in WORKERS:
        assert replay(nx, "--worker", name, "--group", f"{group}-{name}", "--to-earliest",
                      "--execute").returncode == 0
    ws = start_all(nx, tmp_path, group, "-again")
    wait_all(nx, ws)
    stop_all(ws)
    # (more than before: the rebuild's write-back echoes came in between)
    assert sum(w.total("consumed") for w in ws) >= events
    assert sum(w.total("skipped") for w in ws) > 0
    assert sum(w.total("dlq") for w in ws) == 0
    assert canonical_dump(nx) == rebuilt


def includes_history(nx, thread, item):
    return sorted(json.dumps(r["p"], sort_keys=True, default=str) for r in nx.cypher(
        "MATCH (:Thread {id: $a})-[r:INCLUDES]->(:ContentItem {id: $b}) RETURN properties(r) AS p",
        {"a": thread, "b": item}))


def test_versioned_link_history_does_not_depend_on_batch_boundaries(nx, project, tmp_path):
    """Every change of a thread_content row is a version of INCLUDES. A worker
    that gets them one per batch (live) and one that gets them all in one
    batch (a replay) build the same history, and replaying it again into
    the current graph changes nothing."""
    th, ci = U(), U()
    # the replay point: the lane offsets before the first INSERT, from Kafka
    cut = str(tmp_path / "cut.json")
    save_end_offsets(nx, "thread", cut)
    nx.psql(f"""
    INSERT INTO threads (id, project_id, tenant_id, title) VALUES ('{th}', '{project['project']}', '{project['tenant']}', 'v');
    INSERT INTO content_items (id, tenant_id, project_id, content_type, title)
      VALUES ('{ci}', '{project['tenant']}', '{project['project']}', 'text', 'v');""")
    pair = f"thread_id = '{th}' AND content_id = '{ci}'"
    # separate transactions: five versions' worth of changes, then a delete
    for sql in (f"INSERT INTO thread_content (thread_id, content_id, position) VALUES ('{th}', '{ci}', 1)",
                f"UPDATE thread_content SET position = 2 WHERE {pair}",
                f"UPDATE thread_content SET position = 3 WHERE {pair}",
                f"DELETE FROM thread_content WHERE {pair}",
                f"INSERT INTO thread_content (thread_id, content_id, position) VALUES ('{th}', '{ci}', 4)"):
        nx.psql(sql)

    group = f"replay-versions-{uuid.uuid4().hex[:8]}"

    def run(batch_env):
        p = replay(nx, "--worker", "thread", "--group", group, "--from-file", cut, "--execute")
        assert p.returncode == 0, p.stdout + p.stderr
        w = track(Worker(nx, "thread", str(tmp_path / f"thread-{len(runs)}"), group, **batch_env)).start()
        # the thread's own event, the five changes and the delete's tombstone
        wait_until(lambda: w.total("consumed") >= 7, 300, what="the events consumed")
        w.wait_caught_up(timeout=300)
        assert w.stop() == 0
        runs.append(w)
        return includes_history(nx, th, ci)

    runs = []
    one_by_one = run({"NEXUS_BATCH_MAX": 1, "NEXUS_BATCH_MS": 1})
    versions = [json.loads(v) for v in one_by_one]
    assert sorted(v["position"] for v in versions) == [1, 2, 3, 4]
    assert [v["position"] for v in versions if "validTo" not in v] == [4]
    assert all("closedLsn" in v for v in versions if v["position"] < 4)

    # the same events, all in one batch, into a graph without the pair's history
    # (the pair's delete marker is part of its history)
    nx.cypher("MATCH (:Thread {id: $a})-[r:INCLUDES]->(:ContentItem {id: $b}) DELETE r", {"a": th, "b": ci})
    nx.cypher("MATCH (m:NexusTombstone {key: 'INCLUDES/' + $a + '->' + $b}) DELETE m", {"a": th, "b": ci})
    assert run({"NEXUS_BATCH_MAX": 1000, "NEXUS_BATCH_MS": 3000}) == one_by_one
    # and once more into the current graph: every change is skipped
    assert run({"NEXUS_BATCH_MAX": 1000, "NEXUS_BATCH_MS": 3000}) == one_by_one
    assert runs[-1].total("skipped") >= 5
