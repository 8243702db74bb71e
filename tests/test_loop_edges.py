"""The worker loop bounded (issue 13), on the real stack:

- a dead letter too large for the DLQ topic is cut with headers that say
  so, the partition keeps moving, and nexus-dlq re-drives the original
  value, fetched from the source topic;
- a wrong Neo4j database name or wrong credentials stop the worker at
  start-up with a message saying what to fix, while an unreachable Neo4j
  is still waited for;
- PostgreSQL refusing the write-back (42501 a grant missing, 25006 a
  read-only server) is retried, counted by SQLSTATE and named by /readyz
  until a write-back lands; nothing is dead-lettered."""
import json
import os
import socket
import subprocess
import uuid

from nexus import (ROOT, Proxy, Worker, new_tags, run_tool, scratch_lanes, stop_worker, tags_applied, track,
                   wait_until)
from test_metrics import MetricsWorker, http_get, total

# The DLQ topic's own limit in the size test, and the bad event's size.
DLQ_LIMIT = 200000
BIG = 500 * 1024


def headers(msg):
    h = msg.get("headers") or []
    return dict(zip(h[0::2], h[1::2]))


def read_topic(nx, topic, partition=None):
    """Every message of topic as kcat -J dicts (values up to a few MB)."""
    args = ["kcat", "-b", nx.env["NEXUS_KAFKA_BOOTSTRAP"], "-C", "-t", topic, "-o", "beginning", "-e", "-J",
            "-q", "-X", "fetch.message.max.bytes=4194304"]
    if partition is not None:
        args += ["-p", str(partition)]
    p = subprocess.run(args, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.decode("utf-8", "replace").splitlines() if line.strip()]


def real_tag_event(nx, tid):
    """(key, value) of the Debezium event of tag tid on the shared lane."""
    m = wait_until(lambda: [m for m in nx.consume_all("nexus.normal.tag")
                            if m.get("payload") and f'"id":"{tid}"' in m["payload"]], 120,
                   what="the real event of a tag")[0]
    return m["key"], m["payload"]


def kafka_admin(nx, *args):
    """tests/clients/kafka_admin (built by scratch_lanes)."""
    admin = os.path.join(ROOT, "build", "tests", "clients", "kafka_admin")
    p = subprocess.run([admin, nx.env["NEXUS_KAFKA_BOOTSTRAP"], *args], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr


# --- 1. dead letters too large for the broker ---------------------------------

def committed(nx, group, mapping):
    """{(topic, partition): offset} the group committed, by nexus-replay."""
    p = run_tool(nx, "nexus-replay", "--worker", "tag", "--group", group, "--save", "-", NEXUS_MAPPING=mapping)
    assert p.returncode == 0, p.stderr
    return {(o["topic"], o["partition"]): o["offset"] for o in json.loads(p.stdout)["offsets"]}


def test_oversized_dead_letter_is_cut_and_the_partition_moves(nx, project, tmp_path):
    """A malformed event of 500 KB on the lane, the DLQ topic taking at most
    200,000 bytes a message: the dead letter arrives cut under that limit,
    with nexus.truncated giving the real sizes and the source position
    headers; the good event behind it is applied and the group commits
    past both. nexus-dlq then re-drives the letter with its full value,
    read back from the source topic. Before: the broker refused the letter
    for good and the batch was retried for ever, every partition paused."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag",
                                             dlq_configs=(f"max.message.bytes={DLQ_LIMIT}",))
    topic, dlq = f"{prefix}.normal.tag", f"{prefix}.dlq"
    group = f"edges-big-{uuid.uuid4().hex[:8]}"
    w = track(Worker(nx, "tag", str(tmp_path / "w"), group, NEXUS_MAPPING=mapping, NEXUS_BATCH_MS=1000,
                     NEXUS_RETRY_MAX_MS=1000))
    try:
        good = new_tags(nx, project, 1, "edges-after-big")[0]
        key, value = real_tag_event(nx, good)
        bad = b'{"payload": "' + b"x" * BIG + b'"'   # cut JSON: a parse error
        (tmp_path / "bad").write_bytes(bad)
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, str(tmp_path / "bad"))
        w.start()
        dead = wait_until(lambda: read_topic(nx, dlq), 60, what="the dead letter")
        # a later batch: only a partition that moves on brings it in
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        wait_until(lambda: tags_applied(nx, [good]) == 1, 120, what="the good event behind the big one")
        assert len(dead) == 1, [headers(m) for m in dead]
        h = headers(dead[0])
        assert h["nexus.truncated"] == f"key={len(key)} value={len(bad)}", h
        assert (h["nexus.source.topic"], h["nexus.source.partition"], h["nexus.source.offset"]) == \
            (topic, "0", "0"), h
        assert h["nexus.error.class"] == "parse", h
        cut = dead[0]["payload"].encode()
        assert 0 < len(cut) < DLQ_LIMIT and bad.startswith(cut), len(cut)
        wait_until(lambda: w.caught_up(), 60, what="lag 0 after the big event")
        assert "dead letter cut" in w.log_text()
        assert w.stop() == 0
        assert committed(nx, group, mapping) == {(topic, 0): 2}

        # re-drive: the value comes back whole, from the source topic
        p = run_tool(nx, "nexus-dlq", "redrive", "--offset", "0:0", "--execute",
                     NEXUS_MAPPING=mapping)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "restored" in p.stdout + p.stderr, p.stdout + p.stderr
        lane = read_topic(nx, topic, 0)
        assert len(lane) == 3
        again = lane[2]
        assert again["payload"].encode() == bad, len(again["payload"])
        assert "nexus.truncated" not in headers(again), headers(again)
        assert headers(again)["nexus.redrive.dlq.offset"] == "0"
    finally:
        if w.proc:
            w.stop()
        cleanup()


def test_redrive_refuses_a_cut_letter_whose_original_is_gone(nx, tmp_path):
    """A cut dead letter whose source record is no longer there (another
    message at that offset) is refused with a message, and nothing is
    written."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic, dlq = f"{prefix}.normal.tag", f"{prefix}.dlq"
    try:
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", "k", input="something else")
        hdrs = ["-H", f"nexus.source.topic={topic}", "-H", "nexus.source.partition=0",
                "-H", "nexus.source.offset=0", "-H", "nexus.truncated=key=1 value=900000",
                "-H", "nexus.reason=test", "-H", "nexus.error.class=parse"]
        nx.kcat("-P", "-t", dlq, "-p", "0", "-k", "k", *hdrs, input="{\"cut")
        p = run_tool(nx, "nexus-dlq", "redrive", "--offset", "0:0", "--execute",
                     NEXUS_MAPPING=mapping)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "cut" in p.stderr and "cannot be restored" in p.stderr, p.stderr
        assert len(read_topic(nx, topic, 0)) == 1
    finally:
        cleanup()


def test_dead_letter_refused_by_the_broker_is_sent_again_cut(nx, project, tmp_path):
    """The DLQ topic's limit drops below a letter after the worker started
    (it learned the old one): the broker refuses the letter as too large,
    the worker sends it once more without its value, and goes on."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag")
    topic, dlq = f"{prefix}.normal.tag", f"{prefix}.dlq"
    group = f"edges-refused-{uuid.uuid4().hex[:8]}"
    w = track(Worker(nx, "tag", str(tmp_path / "w"), group,
                     NEXUS_MAPPING=mapping, NEXUS_BATCH_MS=500, NEXUS_RETRY_MAX_MS=1000))
    try:
        good = new_tags(nx, project, 1, "edges-after-refused")[0]
        key, value = real_tag_event(nx, good)
        w.start()
        wait_until(lambda: "partitions assigned" in w.log_text(), 60, what="the worker's partitions")
        kafka_admin(nx, "alter", dlq, f"max.message.bytes={DLQ_LIMIT}")
        bad = b"[" + b"1," * (BIG // 2)   # cut JSON
        (tmp_path / "bad").write_bytes(bad)
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, str(tmp_path / "bad"))
        dead = wait_until(lambda: read_topic(nx, dlq), 60, what="the dead letter")
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", key, input=value)
        wait_until(lambda: tags_applied(nx, [good]) == 1, 120, what="the good event behind the refused letter")
        assert len(dead) == 1
        h = headers(dead[0])
        assert h["nexus.truncated"] == f"key={len(key)} value={len(bad)}", h
        assert not dead[0]["payload"], len(dead[0]["payload"])
        assert h["nexus.source.offset"] == "0"
        assert "as too large (Broker: Message size too large): sent again without its value" in w.log_text()
        wait_until(lambda: w.caught_up(), 60, what="lag 0 after the refused letter")
        assert w.stop() == 0
        assert committed(nx, group, mapping) == {(topic, 0): 2}
    finally:
        if w.proc:
            w.stop()
        cleanup()


# --- 2. wrong database or credentials at start-up -----------------------------

def start_and_wait_exit(nx, tmp_path, name, **env):
    log = str(tmp_path / f"{name}.log")
    p = nx.start_worker("tag", log, NEXUS_GROUP_ID=f"edges-{name}-{uuid.uuid4().hex[:8]}", **env)
    try:
        rc = p.wait(timeout=60)
    finally:
        stop_worker(p)
    return rc, open(log, errors="replace").read()


def test_wrong_neo4j_database_stops_the_worker_at_start(nx, tmp_path):
    """Before: DatabaseNotFound was retried for ever at start-up."""
    rc, log = start_and_wait_exit(nx, tmp_path, "db", NEXUS_NEO4J_DB="nosuchdb")
    assert rc == 2, log[-2000:]
    assert "Neo4j database \"nosuchdb\" does not exist" in log, log[-2000:]
    assert "neo4j.database" in log and "NEXUS_NEO4J_DB" in log, log[-2000:]


def test_wrong_neo4j_credentials_stop_the_worker_at_start(nx, tmp_path):
    """A user that does not exist (a wrong password of the real user would
    count towards Neo4j's lock-out of that user). Before: retried for ever."""
    password = f"pw-{uuid.uuid4().hex}"
    rc, log = start_and_wait_exit(nx, tmp_path, "auth", NEXUS_NEO4J_USER="nexus_no_such_user",
                                  NEXUS_NEO4J_PASSWORD=password)
    assert rc == 2, log[-2000:]
    assert "Neo4j refused the credentials of user \"nexus_no_such_user\"" in log, log[-2000:]
    assert password not in log, "the password must not be logged"


def test_wrong_database_of_a_neo4j_down_at_start_stops_the_worker_once_it_answers(nx, tmp_path):
    """Neo4j unreachable at start-up (a loopback proxy refusing
    connections), so the start-up check cannot decide; when it comes up,
    the database does not exist: the worker stops with exit 2 and names
    the setting. Before: the start-up retries took DatabaseNotFound for a
    cluster's passing state and went on for ever."""
    proxy = Proxy(nx.env["NEXUS_NEO4J_URL"].rsplit(":", 1)[1].strip("/"))
    proxy.cut()
    w = track(Worker(nx, "tag", str(tmp_path / "w"), f"edges-late-{uuid.uuid4().hex[:8]}",
                     NEXUS_NEO4J_URL=f"http://127.0.0.1:{proxy.port}", NEXUS_NEO4J_DB="nosuchdb",
                     NEXUS_RETRY_MAX_MS=500))
    try:
        w.start()
        wait_until(lambda: w.log_text().count("retry ") >= 2, 60, what="start-up retries while Neo4j is down")
        assert "could not check Neo4j at start-up" in w.log_text(), w.log_text()[-2000:]
        proxy.restore()
        rc = w.proc.wait(timeout=60)
        log = w.log_text()
        assert rc == 2, log[-2000:]
        assert "Neo4j database \"nosuchdb\" does not exist" in log, log[-2000:]
        assert "NEXUS_NEO4J_DB" in log, log[-2000:]
    finally:
        w.stop()
        proxy.close()


def test_unreachable_neo4j_at_start_is_waited_for(nx, tmp_path):
    """A closed port is an outage, not a configuration error: the worker
    keeps retrying until it is stopped, and stops cleanly."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = track(Worker(nx, "tag", str(tmp_path / "w"), f"edges-down-{uuid.uuid4().hex[:8]}",
                     NEXUS_NEO4J_URL=f"http://127.0.0.1:{port}", NEXUS_RETRY_MAX_MS=500))
    w.start()
    wait_until(lambda: w.log_text().count("retry ") >= 2, 60, what="start-up retries while Neo4j is down")
    assert w.proc.poll() is None, w.log_text()[-2000:]
    assert w.stop() == 0


# --- 3. PostgreSQL refusing the write-back ------------------------------------

def synced(nx, ids):
    return int(nx.scalar("SELECT count(*) FROM tags WHERE sync_status = 'SUCCESS' AND id IN (" +
                         ", ".join(f"'{i}'" for i in ids) + ")"))


def refused_worker(nx, tmp_path, name):
    w = track(MetricsWorker(nx, "tag", str(tmp_path / name), f"edges-{name}-{uuid.uuid4().hex[:8]}",
                            NEXUS_RETRY_MAX_MS=1000))
    w.start()
    w.wait_ready()
    w.wait_caught_up(timeout=300)
    return w


def wait_refused(w, sqlstate, why):
    wait_until(lambda: total(w.samples(), "nexus_pg_write_refused_total", sqlstate=sqlstate) >= 2, 120,
               what=f"write-backs refused with {sqlstate} counted")
    status, body = http_get(w.port, "/readyz")
    assert (status, body) == (503, f"not ready: {why}\n"), (status, body)


def test_missing_grant_is_retried_counted_and_named_by_readyz(nx, project, tmp_path):
    """UPDATE on sync_status revoked from the writer role: the write-back
    is retried (42501), counted, /readyz names it, nothing is dead-lettered;
    granted back, the status lands and /readyz is ready."""
    writer = nx.env["NEXUS_WRITER_USER"]
    w = refused_worker(nx, tmp_path, "grant")
    try:
        nx.psql(f"REVOKE UPDATE (sync_status) ON tags FROM {writer}")
        ids = new_tags(nx, project, 3, "edges-grant")
        wait_until(lambda: tags_applied(nx, ids) == 3, 120, what="applied to Neo4j")
        wait_refused(w, "42501", "postgres refuses writes: 42501 insufficient privilege "
                                 "(a grant of the writer role missing?)")
        assert synced(nx, ids) == 0
        nx.psql(f"GRANT UPDATE (sync_status) ON tags TO {writer}")
        wait_until(lambda: synced(nx, ids) == 3, 120, what="the write-back once granted")
        w.wait_ready(timeout=60)
        s = w.samples()
        assert total(s, "nexus_events_dlq_total") == 0
        assert total(s, "nexus_pg_write_refused_total", sqlstate="25006") == 0
        assert nx.scalar("SELECT count(*) FROM tags WHERE sync_attempts > 0 AND id IN (" +
                         ", ".join(f"'{i}'" for i in ids) + ")") == "0"
    finally:
        nx.psql(f"GRANT UPDATE (sync_status) ON tags TO {writer}")
        w.stop()


def test_read_only_server_is_retried_counted_and_named_by_readyz(nx, project, tmp_path):
    """The writer's sessions made read-only (a replica after a failover
    answers so) and its open session ended: the write-back is retried
    (25006), counted, /readyz names it; writable again, it lands."""
    writer = nx.env["NEXUS_WRITER_USER"]
    w = refused_worker(nx, tmp_path, "ro")
    try:
        nx.psql(f"ALTER ROLE {writer} SET default_transaction_read_only = on")
        nx.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{writer}'")
        ids = new_tags(nx, project, 3, "edges-ro")
        wait_until(lambda: tags_applied(nx, ids) == 3, 120, what="applied to Neo4j")
        wait_refused(w, "25006", "postgres refuses writes: 25006 read-only transaction "
                                 "(a replica after failover?)")
        assert synced(nx, ids) == 0
        nx.psql(f"ALTER ROLE {writer} RESET default_transaction_read_only")
        wait_until(lambda: synced(nx, ids) == 3, 120, what="the write-back once writable")
        w.wait_ready(timeout=60)
        assert total(w.samples(), "nexus_events_dlq_total") == 0
    finally:
        nx.psql(f"ALTER ROLE {writer} RESET default_transaction_read_only")
        w.stop()
