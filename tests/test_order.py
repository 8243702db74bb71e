"""Order-independence against the real stack: the graph after any set of a
key's events, in any order and duplicated, is the state of the newest event
by source position, deletes included.

  - a deleted relationship (a plain link and a versioned INCLUDES pair)
    leaves a NexusTombstone marker with the delete's position, so an older
    upsert of the pair, arriving late (a redelivery, a second group, a
    re-drive), cannot bring it back;
  - markers past the horizon are pruned, younger ones stay;
  - source epochs: after the source's LSNs restart, a change of the new
    epoch wins over the old positions, and without the epoch the worker
    warns that it skipped a change with a newer pg_version.

Made-up orders travel on scratch topics (tests/nexus.py scratch_lanes), so
no other consumer group ever replays them."""
import json
import uuid

from nexus import Worker, new_id as U, run_tool, save_end_offsets, scratch_lanes, track, wait_until


def make_worker(nx, tmp_path, name, sub="", **env):
    w = Worker(nx, name, str(tmp_path / f"{name}{sub}"), f"order-{name}-{uuid.uuid4().hex[:8]}",
               NEXUS_BATCH_MS=20, **env)
    track(w)
    return w


def link_event(nx, topic, a_col, a, b_col, b, op):
    """The Debezium event PostgreSQL produced for one change of a link row."""
    def find():
        for m in nx.consume_all(topic):
            p = m.get("payload")
            if p and f'"{a_col}":"{a}"' in p and f'"{b_col}":"{b}"' in p and f'"op":"{op}"' in p:
                return m["key"], p
        return None
    return wait_until(find, 120, what=f"the {op} event of {a}/{b} in {topic}")


def marker(nx, key):
    return nx.cypher_value("MATCH (m:NexusTombstone {key: $k}) RETURN m.lsn", {"k": key})


def item_and_tag(nx, project):
    ci, tag = U(), U()
    nx.psql(f"""INSERT INTO content_items (id, tenant_id, project_id, content_type, title)
      VALUES ('{ci}', '{project['tenant']}', '{project['project']}', 'text', 'o');
    INSERT INTO tags (id, project_id, tenant_id, name) VALUES ('{tag}', '{project['project']}',
      '{project['tenant']}', 'o-{tag[:8]}');""")
    return ci, tag


def tagged(nx, ci, tag):
    return nx.cypher_value("MATCH (:ContentItem {id: $a})-[r:TAGGED_WITH]->(:Tag {id: $b}) RETURN count(r)",
                           {"a": ci, "b": tag})


def test_a_deleted_link_stays_deleted_when_its_insert_comes_again(nx, project, tmp_path):
    """The divergence CI found: two groups applying the same link changes,
    the one behind re-applies the insert after the other applied the
    delete. Here the insert is delivered again after its delete."""
    w = make_worker(nx, tmp_path, "tag").start()
    try:
        ci, tag = item_and_tag(nx, project)
        nx.psql(f"INSERT INTO content_tags (content_id, tag_id) VALUES ('{ci}', '{tag}')")
        wait_until(lambda: tagged(nx, ci, tag) == 1, 120, what="link applied")
        nx.psql(f"DELETE FROM content_tags WHERE content_id = '{ci}' AND tag_id = '{tag}'")
        key = f"TAGGED_WITH/{ci}->{tag}"
        wait_until(lambda: marker(nx, key) is not None, 120, what="the delete's marker")
        assert tagged(nx, ci, tag) == 0
        k, v = link_event(nx, "nexus.normal.tag", "content_id", ci, "tag_id", tag, "c")
        nx.kcat("-P", "-t", "nexus.normal.tag", "-k", k, input=v)
        w.wait_caught_up()
        wait_until(lambda: w.total("skipped") >= 1, 60, what="the late insert skipped")
        assert tagged(nx, ci, tag) == 0
        # a real re-insert is newer than the marker: it applies and clears it
        nx.psql(f"INSERT INTO content_tags (content_id, tag_id) VALUES ('{ci}', '{tag}')")
        wait_until(lambda: tagged(nx, ci, tag) == 1, 120, what="re-insert applied")
        assert marker(nx, key) is None
    finally:
        assert w.stop() == 0


def test_deletes_delivered_before_their_inserts(nx, project, tmp_path):
    """A plain link and a versioned INCLUDES pair, each inserted then
    deleted in PostgreSQL, delivered delete first: nothing is left current,
    and the markers carry the deletes' positions."""
    ci, tag = item_and_tag(nx, project)
    th = U()
    nx.psql(f"INSERT INTO threads (id, project_id, tenant_id, title) VALUES ('{th}', '{project['project']}', "
            f"'{project['tenant']}', 'o')")
    nx.psql(f"INSERT INTO content_tags (content_id, tag_id) VALUES ('{ci}', '{tag}')")
    nx.psql(f"INSERT INTO thread_content (thread_id, content_id, position) VALUES ('{th}', '{ci}', 1)")
    nx.psql(f"DELETE FROM content_tags WHERE content_id = '{ci}' AND tag_id = '{tag}'")
    nx.psql(f"DELETE FROM thread_content WHERE thread_id = '{th}' AND content_id = '{ci}'")
    cases = [("tag", "content_id", ci, "tag_id", tag, f"TAGGED_WITH/{ci}->{tag}"),
             ("thread", "thread_id", th, "content_id", ci, f"INCLUDES/{th}->{ci}")]
    for name, a_col, a, b_col, b, key in cases:
        mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / f"scratch-{name}"), name)
        try:
            topic = f"{prefix}.normal.{name}"
            for op in ("d", "c"):  # the delete first
                k, v = link_event(nx, f"nexus.normal.{name}", a_col, a, b_col, b, op)
                nx.kcat("-P", "-t", topic, "-p", "0", "-k", k, input=v)
            w = make_worker(nx, tmp_path, name, "-scratch", NEXUS_MAPPING=mapping, NEXUS_LANES="normal").start()
            wait_until(lambda: w.total("consumed") >= 2, 120, what=f"{name}: both events consumed")
            w.wait_caught_up()
            assert w.stop() == 0
            delete_lsn = json.loads(link_event(nx, f"nexus.normal.{name}", a_col, a, b_col, b, "d")[1])["source"]["lsn"]
            assert marker(nx, key) == delete_lsn
            current = nx.cypher_value("MATCH ({id: $a})-[r]->({id: $b}) WHERE r.validTo IS NULL RETURN count(r)",
                                      {"a": a, "b": b})
            assert current == 0, f"{key}: the older insert brought the deleted relationship back"
        finally:
            cleanup()


def test_markers_past_the_horizon_are_pruned(nx, tmp_path):
    """Two made-up markers of the tag worker's relationship type, one whose
    delete was committed long ago and one just now: with a horizon of an
    hour the worker prunes the first and keeps the second (one prune
    transaction sees both)."""
    old, young = f"TAGGED_WITH/{U()}->{U()}", f"TAGGED_WITH/{U()}->{U()}"
    nx.cypher("CREATE (:NexusTombstone {key: $old, lsn: 1, ep: 0, ts: 1000}), "
              "(:NexusTombstone {key: $young, lsn: 1, ep: 0, ts: timestamp()})", {"old": old, "young": young})
    w = make_worker(nx, tmp_path, "tag", NEXUS_TOMBSTONE_HORIZON_S=3600, NEXUS_TOMBSTONE_PRUNE_EVERY_S=1).start()
    try:
        wait_until(lambda: marker(nx, old) is None, 120, what="the old marker pruned")
        assert marker(nx, young) == 1
        assert "delete markers older than 3600 s" in w.log_text()
    finally:
        assert w.stop() == 0
        nx.cypher("MATCH (m:NexusTombstone {key: $k}) DELETE m", {"k": young})


def test_a_new_source_epoch_wins_over_old_positions(nx, project, tmp_path):
    """After a restore into a new cluster, the source's LSNs start lower.
    Without an epoch the worker skips the new change and says why; with
    source.epochs at the switch-over, the new change wins, and the old
    event delivered again does not."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    tid = U()
    nx.psql(f"INSERT INTO tags (id, project_id, tenant_id, name) VALUES ('{tid}', '{project['project']}', "
            f"'{project['tenant']}', 'before-{tid[:8]}')")

    def find():
        for m in nx.consume_all("nexus.normal.tag"):
            if m.get("payload") and f'"id":"{tid}"' in m["payload"]:
                return m["key"], m["payload"]
        return None
    key, created = wait_until(find, 120, what="the tag's event")
    old = json.loads(created)
    switch_ms = old["source"]["ts_ms"] + 500
    new = json.loads(created)
    new["op"], new["before"] = "u", dict(old["after"])
    new["after"]["name"] = f"after-{tid[:8]}"
    new["after"]["pg_version"] = (old["after"].get("pg_version") or 1) + 1
    new["source"]["lsn"] = 1  # the new cluster's positions start low
    new["source"]["ts_ms"] = new["ts_ms"] = switch_ms + 500

    def name():
        return nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN t.name", {"id": tid})
    try:
        # one after the other: in one batch they would coalesce before Neo4j
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=created)
        w = make_worker(nx, tmp_path, "tag", "-noepoch", NEXUS_MAPPING=mapping).start()
        wait_until(lambda: name() == f"before-{tid[:8]}", 120, what="the create applied")
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=json.dumps(new))
        wait_until(lambda: w.total("consumed") >= 2, 120, what="both events consumed")
        w.wait_caught_up()
        assert name() == f"before-{tid[:8]}"
        assert "raise source.epoch" in w.log_text()
        assert w.stop() == 0

        w = make_worker(nx, tmp_path, "tag", "-epoch", NEXUS_MAPPING=mapping,
                        NEXUS_SOURCE_EPOCHS=str(switch_ms)).start()
        wait_until(lambda: name() == f"after-{tid[:8]}", 120, what="the new epoch's change applied")
        assert nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN t.srcEpoch", {"id": tid}) == 1
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=created)  # the old create again
        wait_until(lambda: w.total("consumed") >= 3, 120, what="the old event consumed")
        w.wait_caught_up()
        assert name() == f"after-{tid[:8]}"
        assert w.stop() == 0
    finally:
        cleanup()


def test_a_late_node_delete_keeps_newer_relationships(nx, project, tmp_path):
    """A content item and a thread are created, deleted and created again
    under the same keys; then a thread_content link and a message under the
    thread are written. The message and thread workers run ahead and attach
    CONTAINS_MESSAGE and INCLUDES to the nodes; the node deletes, applied
    later one event per batch, must remove only what is older than the
    delete: the newer relationships stay, on a placeholder that the
    re-create fills in. (The soak run of tests/test_convergence.py found
    this when a worker slowed by deadlock retries fell behind another.)"""
    ci, th, msg = U(), U(), U()
    groups, cuts = {}, {}
    for name in ("thread", "content_item", "message"):
        cuts[name] = str(tmp_path / f"cut-{name}.json")
        save_end_offsets(nx, name, cuts[name])
        groups[name] = f"order-late-{name}-{uuid.uuid4().hex[:8]}"
        p = run_tool(nx, "nexus-replay", "--worker", name, "--group", groups[name], "--from-file", cuts[name],
                     "--execute")
        assert p.returncode == 0, p.stdout + p.stderr
    t, pr = project["tenant"], project["project"]
    for _ in range(2):  # created, deleted, created again
        nx.psql(f"""INSERT INTO content_items (id, tenant_id, project_id, content_type, title)
          VALUES ('{ci}', '{t}', '{pr}', 'text', 'late');
        INSERT INTO threads (id, project_id, tenant_id, title) VALUES ('{th}', '{pr}', '{t}', 'late');""")
        if _ == 0:
            nx.psql(f"DELETE FROM content_items WHERE id = '{ci}'; DELETE FROM threads WHERE id = '{th}';")
    nx.psql(f"INSERT INTO thread_content (thread_id, content_id, position) VALUES ('{th}', '{ci}', 7)")
    nx.psql(f"INSERT INTO messages (id, thread_id, tenant_id, role, body) VALUES ('{msg}', '{th}', '{t}', "
            f"'user', 'late')")

    def start(name, sub, **env):
        w = Worker(nx, name, str(tmp_path / f"{name}{sub}"), groups[name], **env)
        return track(w).start()

    # the message worker first: it owns no deleted row, so it only adds
    # CONTAINS_MESSAGE; then the thread worker, whose lanes hold the thread's
    # own create/delete/create and INCLUDES, one event per batch
    m = start("message", "")
    wait_until(lambda: nx.cypher_value("MATCH (:Thread {id: $t})-[r:CONTAINS_MESSAGE]->(:Message {id: $m}) "
                                       "RETURN count(r)", {"t": th, "m": msg}) == 1, 120, what="message applied")
    assert m.stop() == 0
    w = start("thread", "", NEXUS_BATCH_MAX=1)
    wait_until(lambda: nx.scalar(f"SELECT sync_status FROM thread_content WHERE thread_id = '{th}'") == "SUCCESS",
               120, what="INCLUDES applied")
    w.wait_caught_up()
    assert w.stop() == 0
    w = start("content_item", "", NEXUS_BATCH_MAX=1)
    wait_until(lambda: nx.scalar(f"SELECT sync_status FROM content_items WHERE id = '{ci}'") == "SUCCESS",
               120, what="the item's events applied")
    w.wait_caught_up()
    assert w.stop() == 0
    assert nx.cypher_value("MATCH (:Thread {id: $t})-[r:INCLUDES]->(:ContentItem {id: $c}) WHERE r.validTo IS NULL "
                           "RETURN count(r)", {"t": th, "c": ci}) == 1
    assert nx.cypher_value("MATCH (:Thread {id: $t})-[r:CONTAINS_MESSAGE]->(:Message {id: $m}) RETURN count(r)",
                           {"t": th, "m": msg}) == 1
    assert nx.cypher_value("MATCH (c:ContentItem {id: $c}) RETURN c.title", {"c": ci}) == "late"
    assert nx.cypher_value("MATCH (t:Thread {id: $t}) RETURN t.title", {"t": th}) == "late"
