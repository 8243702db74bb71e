"""Failures against the real servers: a Neo4j or PostgreSQL outage is
retried with backoff and loses nothing; a permanent Neo4j rejection splits
the batch so the good events still apply."""
import json
import time
import uuid

import pytest

from nexus import new_tags, Proxy, Stack, Worker, scratch_lanes, tags_applied, wait_until






def synced(nx, ids):
    return int(nx.scalar("SELECT count(*) FROM tags WHERE sync_status = 'SUCCESS' AND id IN (" +
                         ", ".join(f"'{i}'" for i in ids) + ")"))


def no_failures(nx, ids):
    """None of these rows was ever marked FAILED (a transient error is never
    a dead letter)."""
    return nx.scalar("SELECT count(*) FROM tags WHERE sync_attempts > 0 AND id IN (" +
                     ", ".join(f"'{i}'" for i in ids) + ")") == "0"


def test_neo4j_outage_is_retried_and_loses_nothing(nx, project, tmp_path):
    proxy = Proxy(nx.env["NEXUS_NEO4J_URL"].rsplit(":", 1)[1])
    w = Worker(nx, "tag", str(tmp_path / "w"), f"fail-neo-{uuid.uuid4().hex[:8]}",
               NEXUS_NEO4J_URL=f"http://127.0.0.1:{proxy.port}", NEXUS_RETRY_MAX_MS=1000)
    try:
        w.start()
        first = new_tags(nx, project, 5, "before")
        wait_until(lambda: tags_applied(nx, first) == 5, 120, what="first tags")
        proxy.cut()
        during = new_tags(nx, project, 20, "during")
        wait_until(lambda: (w.stats() or {}).get("neo4j_retries", 0) >= 2, 120, what="retries while Neo4j is down")
        assert tags_applied(nx, during) == 0
        assert w.proc.poll() is None
        proxy.restore()
        wait_until(lambda: tags_applied(nx, during) == 20, 120, what="tags after the outage")
        wait_until(lambda: synced(nx, during) == 20, 60, what="write-back after the outage")
        assert no_failures(nx, during)
        assert "could not commit to Neo4j" in w.log_text()
    finally:
        w.stop()
        proxy.close()


def test_postgres_outage_for_the_writeback_is_retried(nx, project, tmp_path):
    proxy = Proxy(nx.env["NEXUS_PG_PORT"])
    w = Worker(nx, "tag", str(tmp_path / "w"), f"fail-pg-{uuid.uuid4().hex[:8]}",
               NEXUS_PG_PORT=proxy.port, NEXUS_RETRY_MAX_MS=1000)
    try:
        w.start()
        first = new_tags(nx, project, 3, "pg-before")
        wait_until(lambda: synced(nx, first) == 3, 120, what="first write-back")
        proxy.cut()
        during = new_tags(nx, project, 10, "pg-during")
        wait_until(lambda: tags_applied(nx, during) == 10, 120, what="Neo4j applied while PostgreSQL is unreachable")
        wait_until(lambda: (w.stats() or {}).get("pg_retries", 0) >= 2, 120, what="write-back retries")
        assert synced(nx, during) == 0
        proxy.restore()
        wait_until(lambda: synced(nx, during) == 10, 120, what="write-back after the outage")
        assert no_failures(nx, during)
    finally:
        w.stop()
        proxy.close()


def test_permanent_neo4j_error_splits_the_batch(nx, project, tmp_path):
    """Three real events in one batch, one of them altered so that Neo4j
    rejects it (an impossible time of day): the other two commit and the
    bad one goes to the DLQ as neo4j_permanent. They travel on scratch
    topics, so nobody else ever replays the altered event."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    w = Worker(nx, "tag", str(tmp_path / "w"), f"fail-split-{uuid.uuid4().hex[:8]}",
               NEXUS_BATCH_MS=2000, NEXUS_MAPPING=mapping)
    ids = new_tags(nx, project, 3, "split")
    good, bad = [ids[0], ids[2]], ids[1]
    try:
        events = []
        for tid in ids:
            m = wait_until(lambda: [m for m in nx.consume_all("nexus.normal.tag")
                                    if m.get("payload") and f'"id":"{tid}"' in m["payload"]], 120,
                           what="real tag event")[0]
            value = json.loads(m["payload"])
            if tid == bad:
                value["after"]["created_at"] = "2026-02-10T25:61:00Z"
            events.append((m["key"], json.dumps(value)))
        for key, value in events:
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        w.start()
        wait_until(lambda: nx.cypher_value("MATCH (t:Tag) WHERE t.id IN $ids AND t.srcLsn IS NOT NULL "
                                           "RETURN count(t)", {"ids": good}) == 2, 120, what="good events applied")
        dead = wait_until(lambda: nx.consume_all(f"{prefix}.dlq"), 60, what="dead letter")
        assert len(dead) == 1 and json.loads(dead[0]["payload"])["after"]["id"] == bad
        h = dead[0]["headers"]
        hdr = dict(zip(h[0::2], h[1::2]))
        assert hdr["nexus.error.class"] == "neo4j_permanent", hdr
        assert "Neo.ClientError" in hdr["nexus.reason"], hdr
        assert "one by one" in w.log_text()
        assert nx.scalar(f"SELECT sync_status FROM tags WHERE id = '{bad}'") == "FAILED"
    finally:
        if w.proc:
            w.stop()
        cleanup()


def test_events_folded_into_a_dead_lettered_change_are_dead_lettered_too(nx, project, tmp_path):
    """Two changes of one tag in one batch coalesce into the newer; when
    Neo4j rejects that one for good, the older one, folded into it and
    never applied, goes to the DLQ as well, with its own offset, and the
    row is FAILED. Two other tags in the batch commit. Scratch topics, so
    nobody replays the altered events."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic = f"{prefix}.normal.tag"
    w = Worker(nx, "tag", str(tmp_path / "w"), f"fail-fold-{uuid.uuid4().hex[:8]}",
               NEXUS_BATCH_MS=2000, NEXUS_MAPPING=mapping)
    ids = new_tags(nx, project, 3, "fold")
    folded, good = ids[0], ids[1:]
    try:
        events = []
        for tid in ids:
            m = wait_until(lambda: [m for m in nx.consume_all("nexus.normal.tag")
                                    if m.get("payload") and f'"id":"{tid}"' in m["payload"]], 120,
                           what="real tag event")[0]
            events.append((m["key"], m["payload"]))
            if tid == folded:
                # a later update of the same row that Neo4j cannot take
                later = json.loads(m["payload"])
                later["op"] = "u"
                later["before"] = dict(later["after"])
                later["after"]["name"] = "fold-renamed"
                later["after"]["created_at"] = "2026-02-10T25:61:00Z"
                later["source"]["lsn"] = later["source"]["lsn"] + 1
                events.append((m["key"], json.dumps(later)))
        for key, value in events:
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        w.start()
        wait_until(lambda: nx.cypher_value("MATCH (t:Tag) WHERE t.id IN $ids AND t.srcLsn IS NOT NULL "
                                           "RETURN count(t)", {"ids": good}) == 2, 120, what="good events applied")
        dead = wait_until(lambda: (lambda d: d if len(d) >= 2 else None)(nx.consume_all(f"{prefix}.dlq")),
                          60, what="two dead letters")
        assert len(dead) == 2, dead
        hdrs = [dict(zip(d["headers"][0::2], d["headers"][1::2])) for d in dead]
        assert {json.loads(d["payload"])["after"]["id"] for d in dead} == {folded}
        assert sorted(int(h["nexus.source.offset"]) for h in hdrs) == [0, 1], hdrs
        assert all(h["nexus.error.class"] == "neo4j_permanent" for h in hdrs), hdrs
        by_offset = {int(h["nexus.source.offset"]): h["nexus.reason"] for h in hdrs}
        assert "Neo.ClientError" in by_offset[1], by_offset
        assert by_offset[0].startswith(f"folded into the change at {topic}[0]@1"), by_offset
        assert nx.scalar(f"SELECT sync_status FROM tags WHERE id = '{folded}'") == "FAILED"
        assert nx.cypher_value("MATCH (t:Tag {id: $id}) WHERE t.srcLsn IS NOT NULL RETURN count(t)",
                               {"id": folded}) == 0
    finally:
        if w.proc:
            w.stop()
        cleanup()


def test_writeback_yields_to_application_row_locks(nx, project, tmp_path):
    """An application transaction holding a row lock is never made to wait
    long or to fail by the write-back: the worker gives up the lock wait,
    backs off and writes once the row is free."""
    import subprocess
    import threading
    w = Worker(nx, "tag", str(tmp_path / "w"), f"fail-lock-{uuid.uuid4().hex[:8]}", NEXUS_RETRY_MAX_MS=500)
    w.start()
    w.wait_caught_up(timeout=300)
    w.stop()
    tag = new_tags(nx, project, 1, "locked")[0]
    result = {}

    def hold_lock():
        result["out"] = nx.psql(f"BEGIN; SELECT id FROM tags WHERE id = '{tag}' FOR UPDATE; "
                                f"SELECT pg_sleep(4); COMMIT;", check=False)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        time.sleep(0.5)
        w.start()
        wait_until(lambda: tags_applied(nx, [tag]) == 1, 120, what="tag applied in Neo4j")
        wait_until(lambda: (w.stats() or {}).get("pg_retries", 0) >= 1, 30, what="write-back lock timeout retried")
        holder.join()
        wait_until(lambda: synced(nx, [tag]) == 1, 60, what="write-back after the lock")
        assert "could not write sync status" in w.log_text()
    finally:
        holder.join()
        w.stop()


def test_worker_killed_mid_outage_resumes_from_its_committed_offset(nx, project, tmp_path):
    """Offsets are committed only after Neo4j and the write-back: a worker
    killed with SIGKILL while its batch cannot reach Neo4j leaves the batch
    uncommitted, and the next worker of the group applies it."""
    proxy = Proxy(nx.env["NEXUS_NEO4J_URL"].rsplit(":", 1)[1])
    group = f"fail-kill-{uuid.uuid4().hex[:8]}"
    env = dict(NEXUS_NEO4J_URL=f"http://127.0.0.1:{proxy.port}", NEXUS_RETRY_MAX_MS=1000)
    first = Worker(nx, "tag", str(tmp_path / "a"), group, **env)
    second = Worker(nx, "tag", str(tmp_path / "b"), group, **env)
    try:
        first.start()
        first.wait_caught_up(timeout=300)
        proxy.cut()
        pending = new_tags(nx, project, 15, "killed")
        wait_until(lambda: (first.stats() or {}).get("neo4j_retries", 0) >= 1, 120, what="batch stuck on Neo4j")
        first.proc.kill()
        first.proc.wait()
        proxy.restore()
        second.start()
        wait_until(lambda: tags_applied(nx, pending) == 15, 120, what="the uncommitted batch applied by the next worker")
        wait_until(lambda: synced(nx, pending) == 15, 60, what="its write-back")
    finally:
        for w in (first, second):
            if w.proc and w.proc.poll() is None:
                w.stop()
        proxy.close()
