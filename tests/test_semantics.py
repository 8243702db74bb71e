"""Worker semantics against the real stack: DLQ, coalescing, stale events,
late deletes, the quiet write-back, replay idempotence and lane priority."""
import json
import uuid

import pytest

from nexus import track, new_id as U, Stack, Worker, graph_dump, scratch_lanes, wait_until


def make_worker(nx, tmp_path, name, **env):
    w = Worker(nx, name, str(tmp_path / name), f"sem-{name}-{uuid.uuid4().hex[:8]}",
               NEXUS_BATCH_MS=20, **env)
    track(w)
    return w


def content_item(nx, project, title="item"):
    cid = U()
    nx.psql(f"INSERT INTO content_items (id, tenant_id, project_id, content_type, title) "
            f"VALUES ('{cid}', '{project['tenant']}', '{project['project']}', 'text', '{title}')")
    return cid


def title_of(nx, cid):
    return nx.cypher_value("MATCH (c:ContentItem {id: $id}) RETURN c.title", {"id": cid})


def dlq_messages(nx, key, topic="nexus.dlq"):
    out = []
    for m in nx.consume_all(topic):
        if m.get("key") == key:
            h = m.get("headers") or []
            m["hdr"] = dict(zip(h[0::2], h[1::2]))
            out.append(m)
    return out


def real_event(nx, topic, row_id, op="c"):
    """The Debezium event that PostgreSQL produced for a row, as (key, value)."""
    def find():
        for m in nx.consume_all(topic):
            if m.get("payload") and f'"id":"{row_id}"' in m["payload"] and f'"op":"{op}"' in m["payload"]:
                return m["key"], m["payload"]
        return None
    return wait_until(find, 120, what=f"the {op} event of {row_id} in {topic}")


@pytest.fixture
def scratch(nx, tmp_path):
    """Scratch lane topics for the tag worker: made-up events injected there
    are never replayed by anyone else."""
    path, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    yield path, prefix
    cleanup()


def new_tag(nx, project, name):
    tid = U()
    nx.psql(f"INSERT INTO tags (id, project_id, tenant_id, name) VALUES ('{tid}', '{project['project']}', "
            f"'{project['tenant']}', '{name}')")
    return tid


def test_bad_events_go_to_the_dlq_and_the_partition_keeps_moving(nx, project, tmp_path, scratch):
    mapping, prefix = scratch
    topic = f"{prefix}.normal.tag"
    w = make_worker(nx, tmp_path, "tag", NEXUS_MAPPING=mapping).start()
    try:
        key = json.dumps({"id": U()})
        good_tag = new_tag(nx, project, "after-the-bad-ones")
        good_key, good_value = real_event(nx, "nexus.normal.tag", good_tag)
        bad = [
            ("{not json", "parse"),
            (json.dumps({"op": "c", "after": {"id": U()}, "source": {"table": "secrets", "lsn": 5}}), "schema"),
            (json.dumps({"op": "c", "after": {"name": "x"}, "source": {"table": "tags", "lsn": 5, "ts_ms": 1}}), "schema"),
            (json.dumps({"op": "c", "after": {"id": U(), "project_id": project["project"], "name": 42,
                                               "tenant_id": project["tenant"], "pg_version": 1},
                         "source": {"table": "tags", "lsn": 5, "ts_ms": 1}}), "schema"),
            (json.dumps({"op": "z", "after": {}, "source": {"table": "tags"}}), "schema"),
        ]
        for value, _ in bad:
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", good_key, input=good_value)
        wait_until(lambda: nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN t.name", {"id": good_tag}) ==
                   "after-the-bad-ones", 120, what="good tag applied")
        dead = wait_until(lambda: (lambda d: d if len(d) == len(bad) else None)(dlq_messages(nx, key, f"{prefix}.dlq")),
                          60, what="dead letters")
        for m in dead:
            assert m["hdr"]["nexus.reason"]
            assert m["hdr"]["nexus.source.topic"] == topic
            assert m["hdr"]["nexus.worker"] == "tag"
            assert int(m["hdr"]["nexus.source.offset"]) >= 0
        assert sorted(m["hdr"]["nexus.error.class"] for m in dead) == sorted(c for _, c in bad)
        reasons = " | ".join(m["hdr"]["nexus.reason"] for m in dead)
        assert "not mapped" in reasons and "key column id" in reasons and "unknown op" in reasons
        assert w.proc.poll() is None, "worker died on bad input"
        # labels in the graph come from the mapping only
        assert nx.cypher_value("MATCH (n:secrets) RETURN count(n)") == 0
    finally:
        assert w.stop() == 0


def test_failed_event_sets_failed_status(nx, project, tmp_path, scratch):
    """A row whose event cannot be applied is marked FAILED in PostgreSQL."""
    mapping, prefix = scratch
    topic = f"{prefix}.normal.tag"
    w = make_worker(nx, tmp_path, "tag", NEXUS_MAPPING=mapping).start()
    try:
        tag = new_tag(nx, project, "ok")
        key, value = real_event(nx, "nexus.normal.tag", tag)
        nx.kcat("-P", "-t", topic, "-k", key, input=value)
        wait_until(lambda: nx.scalar(f"SELECT sync_status FROM tags WHERE id = '{tag}'") == "SUCCESS", 120,
                   what="tag SUCCESS")
        bad = json.loads(value)
        bad.update(op="u", before=None)
        bad["after"]["project_id"] = "not-a-uuid"
        nx.kcat("-P", "-t", topic, "-k", key, input=json.dumps(bad))
        row = wait_until(lambda: (lambda r: r if r and r[0][0] == "FAILED" else None)(
            nx.rows(f"SELECT sync_status, sync_attempts, last_sync_error FROM tags WHERE id = '{tag}'")),
            120, what="FAILED status")[0]
        assert int(row[1]) >= 1 and "project_id" in row[2]
    finally:
        assert w.stop() == 0


def test_one_update_is_one_write_then_quiet(nx, project, tmp_path):
    w = make_worker(nx, tmp_path, "content_item").start()
    try:
        cid = content_item(nx, project, "before")
        wait_until(lambda: nx.scalar(f"SELECT sync_status FROM content_items WHERE id = '{cid}'") == "SUCCESS",
                   120, what="insert synced")
        w.wait_caught_up()
        applied0, consumed0, skipped0 = w.total("applied"), w.total("consumed"), w.total("skipped")
        nx.psql(f"UPDATE content_items SET title = 'after' WHERE id = '{cid}'")
        wait_until(lambda: title_of(nx, cid) == "after", 60, what="update applied")
        w.wait_caught_up(quiet_s=3)
        assert w.total("applied") - applied0 == 1
        # only the update: our write-back changes bookkeeping columns only,
        # which the connector leaves out, so Debezium drops its echo
        assert w.total("consumed") - consumed0 == 1
        assert w.total("skipped") - skipped0 == 0
        assert nx.scalar(f"SELECT sync_status FROM content_items WHERE id = '{cid}'") == "SUCCESS"
        assert nx.scalar(f"SELECT pg_version FROM content_items WHERE id = '{cid}'") == "2"
    finally:
        assert w.stop() == 0


def test_changes_to_one_key_coalesce_to_the_latest(nx, project, tmp_path):
    w = make_worker(nx, tmp_path, "content_item").start()
    cid = content_item(nx, project, "v0")
    wait_until(lambda: title_of(nx, cid) == "v0", 120, what="v0")
    w.wait_caught_up()
    assert w.stop() == 0
    for i in range(1, 21):
        nx.psql(f"UPDATE content_items SET title = 'v{i}' WHERE id = '{cid}'")
    w.start(NEXUS_BATCH_MS=3000, NEXUS_BATCH_MAX=5000)
    try:
        wait_until(lambda: title_of(nx, cid) == "v20", 120, what="v20")
        w.wait_caught_up()
        s = w.stats()
        assert s["lanes"]["high"]["consumed"] >= 20
        assert s["lanes"]["high"]["applied"] < 5, s
        assert nx.cypher_value("MATCH (c:ContentItem {id: $id}) RETURN c.pgVersion", {"id": cid}) == 21
    finally:
        assert w.stop() == 0


def test_stale_event_never_overwrites_newer_state(nx, project, tmp_path):
    w = make_worker(nx, tmp_path, "content_item").start()
    try:
        cid = content_item(nx, project, "old")
        wait_until(lambda: title_of(nx, cid) == "old", 120, what="old")
        original = [m for m in nx.consume_all("nexus.high.content_item")
                    if m.get("payload") and f'"id":"{cid}"' in m["payload"] and '"op":"c"' in m["payload"]]
        assert len(original) == 1
        nx.psql(f"UPDATE content_items SET title = 'new' WHERE id = '{cid}'")
        wait_until(lambda: title_of(nx, cid) == "new", 60, what="new")
        # the original create, delivered again (a replay, a redelivery)
        nx.kcat("-P", "-t", "nexus.high.content_item", "-k", original[0]["key"], input=original[0]["payload"])
        w.wait_caught_up()
        assert title_of(nx, cid) == "new"
    finally:
        assert w.stop() == 0


def test_late_link_does_not_resurrect_a_deleted_node(nx, project, tmp_path):
    ci_w = make_worker(nx, tmp_path, "content_item").start()
    th_w = make_worker(nx, tmp_path, "thread")
    try:
        cid = content_item(nx, project, "doomed")
        thread = U()
        nx.psql(f"INSERT INTO threads (id, project_id, tenant_id, title) VALUES ('{thread}', "
                f"'{project['project']}', '{project['tenant']}', 't')")
        wait_until(lambda: title_of(nx, cid) == "doomed", 120, what="item")
        # thread_worker is not running: its INCLUDES insert waits in Kafka
        nx.psql(f"INSERT INTO thread_content (thread_id, content_id) VALUES ('{thread}', '{cid}')")
        nx.psql(f"DELETE FROM content_items WHERE id = '{cid}'")
        wait_until(lambda: nx.cypher_value("MATCH (c:ContentItem {id: $id}) RETURN count(c)", {"id": cid}) == 0,
                   120, what="delete applied")
        th_w.start()
        wait_until(lambda: nx.cypher_value("MATCH (t:Thread {id: $id}) RETURN count(t)", {"id": thread}) == 1,
                   120, what="thread applied")
        th_w.wait_caught_up()
        assert nx.cypher_value("MATCH (c:ContentItem {id: $id}) RETURN count(c)", {"id": cid}) == 0
        assert nx.cypher_value("MATCH (:Thread {id: $id})-[r:INCLUDES]->() RETURN count(r)", {"id": thread}) == 0
    finally:
        assert ci_w.stop() == 0
        if th_w.proc:
            assert th_w.stop() == 0


def test_replaying_a_topic_changes_nothing(nx, project, tmp_path):
    w = make_worker(nx, tmp_path, "content_item").start()
    try:
        ids = [content_item(nx, project, f"r{i}") for i in range(5)]
        nx.psql(f"UPDATE content_items SET title = title || '!' WHERE id = '{ids[0]}'")
        nx.psql(f"DELETE FROM content_items WHERE id = '{ids[1]}'")
        wait_until(lambda: title_of(nx, ids[0]) == "r0!", 120, what="updates")
        w.wait_caught_up()
        before = graph_dump(nx, project["project"])
    finally:
        assert w.stop() == 0
    # a new group reads every event of the topic again from the beginning
    again = make_worker(nx, tmp_path, "content_item").start()
    try:
        again.wait_caught_up(timeout=300)
        assert again.total("consumed") > 0
        assert graph_dump(nx, project["project"]) == before
    finally:
        assert again.stop() == 0


def test_higher_lane_is_served_before_a_low_backlog(nx, project, tmp_path):
    w = make_worker(nx, tmp_path, "message", NEXUS_BATCH_MAX=200, NEXUS_LOG_LEVEL="debug").start()
    thread = U()
    nx.psql(f"INSERT INTO threads (id, project_id, tenant_id, title) VALUES ('{thread}', "
            f"'{project['project']}', '{project['tenant']}', 'lanes')")
    w.wait_caught_up()
    assert w.stop() == 0
    # a large low-lane backlog (message_context_items), then a burst on the high lane (messages)
    high0, low0 = nx.end_offset_total("nexus.high.message"), nx.end_offset_total("nexus.low.message")
    items = [content_item(nx, project, f"ctx{i}") for i in range(40)]
    nx.psql(f"""INSERT INTO messages (id, thread_id, tenant_id, role, body)
        SELECT gen_random_uuid(), '{thread}', '{project['tenant']}', 'user', 'backlog ' || g
        FROM generate_series(1, 300) g;
        INSERT INTO message_context_items (message_id, content_id, relevance_score)
        SELECT m.id, c.id, 0.5 FROM messages m, content_items c
        WHERE m.thread_id = '{thread}' AND c.id IN ({", ".join(f"'{i}'" for i in items)});""")
    backlog = int(nx.scalar(f"SELECT count(*) FROM message_context_items mc JOIN messages m ON m.id = mc.message_id "
                            f"WHERE m.thread_id = '{thread}'"))
    burst_thread = U()
    nx.psql(f"""INSERT INTO threads (id, project_id, tenant_id, title) VALUES ('{burst_thread}',
        '{project['project']}', '{project['tenant']}', 'burst');
        INSERT INTO messages (id, thread_id, tenant_id, role, body)
        SELECT gen_random_uuid(), '{burst_thread}', '{project['tenant']}', 'user', 'urgent ' || g
        FROM generate_series(1, 50) g;""")
    # both are in Kafka before the worker comes back: the test is about the
    # worker's order, not Debezium's
    wait_until(lambda: nx.end_offset_total("nexus.low.message") >= low0 + backlog and
               nx.end_offset_total("nexus.high.message") >= high0 + 350, 300, what="backlog and burst in Kafka")
    w.start()
    try:
        wait_until(lambda: nx.scalar(f"SELECT count(*) FROM messages WHERE thread_id = '{burst_thread}' "
                                     f"AND sync_status = 'SUCCESS'") == "50", 300, what="burst synced")
        done_low = int(nx.scalar(f"""SELECT count(*) FROM message_context_items mc JOIN messages m ON m.id = mc.message_id
            WHERE m.thread_id = '{thread}' AND mc.last_sync_timestamp <=
            (SELECT max(last_sync_timestamp) FROM messages WHERE thread_id = '{burst_thread}')"""))
        w.wait_caught_up(timeout=600)
        assert done_low < backlog * 0.25, f"{done_low} of {backlog} low-lane rows were applied before the burst"
    finally:
        assert w.stop() == 0


def test_missing_endpoint_is_a_bare_node_filled_in_later(nx, project, tmp_path):
    ci_w = make_worker(nx, tmp_path, "content_item").start()
    ci_w.wait_caught_up(timeout=300)
    assert ci_w.stop() == 0
    th_w = make_worker(nx, tmp_path, "thread").start()
    try:
        cid = content_item(nx, project, "filled later")
        thread = U()
        nx.psql(f"INSERT INTO threads (id, project_id, tenant_id, title) VALUES ('{thread}', "
                f"'{project['project']}', '{project['tenant']}', 't');"
                f"INSERT INTO thread_content (thread_id, content_id, position) VALUES ('{thread}', '{cid}', 1)")
        wait_until(lambda: nx.cypher_value("MATCH (:Thread {id: $t})-[:INCLUDES]->(c:ContentItem {id: $c}) "
                                           "RETURN count(c)", {"t": thread, "c": cid}) == 1, 120, what="INCLUDES")
        bare = nx.cypher("MATCH (c:ContentItem {id: $c}) RETURN c.title AS title, c.srcLsn AS lsn", {"c": cid})
        assert bare == [{"title": None, "lsn": None}], "the endpoint is a bare keyed node"
        ci_w.start()
        wait_until(lambda: title_of(nx, cid) == "filled later", 120, what="node filled in")
        assert nx.cypher_value("MATCH (c:ContentItem {id: $c}) RETURN count(c)", {"c": cid}) == 1
        assert nx.cypher_value("MATCH (:Thread {id: $t})-[:INCLUDES]->(c:ContentItem {id: $c}) RETURN count(c)",
                               {"t": thread, "c": cid}) == 1
    finally:
        th_w.stop()
        if ci_w.proc and ci_w.proc.poll() is None:
            ci_w.stop()


def test_uniqueness_constraints_exist_for_every_label(nx, tmp_path):
    w = make_worker(nx, tmp_path, "tag").start()
    try:
        wait_until(lambda: w.stats() is not None, 60, what="worker started")
        rows = nx.cypher("SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties "
                         "RETURN name, type, labelsOrTypes AS l, properties AS p")
        got = {(r["l"][0], r["p"][0]) for r in rows if r["type"] == "UNIQUENESS"}
        for label in ["Tenant", "User", "Program", "Project", "Thread", "ContentItem", "Text", "Code",
                      "ContentChunk", "Tag", "Message"]:
            assert (label, "id") in got, label
        assert ("NexusTombstone", "key") in got
    finally:
        w.stop()
