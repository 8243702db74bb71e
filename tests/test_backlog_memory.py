"""Memory bounded by bytes, whatever the backlog: a worker started while
Neo4j is down (a loopback proxy in front of it refuses connections), with
Neo4j down again when a backlog of 1 MB rows arrives, keeps its peak RSS
under a bound set by its byte limits (a batch takes what fits in
batch.max_bytes, not batch.max_events rows), and applies every row once
Neo4j is back.

The rows are text_content create events in Debezium's shape, cloned from a
real one (of a row the test writes), on scratch topics that accept 2 MB messages (the shared stack's
broker takes 1 MB, so PostgreSQL cannot send 1 MB rows through it)."""
import json
import os
import uuid

from nexus import Proxy, Worker, new_id, scratch_lanes, wait_until

ROWS = 40
BODY = 1 << 20
LIMIT = 4 << 20       # batch.max_bytes and batch.backlog_max_bytes
# Measured: 35 MB with the byte limits; 97 MB before them (a batch took 37
# of the 40 rows). Start-up (libraries, librdkafka threads, curl) is 15 MB; then
# librdkafka's own queue (queued.max.messages.kbytes 6 MB, fetch.max.bytes
# 4 MB), the backlog, and a batch with its change rows and request body.
RSS_BOUND_KB = 64 * 1024


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def text_event(template, content_id, lsn, body):
    ev = json.loads(template)
    ev["after"] = {"content_id": content_id, "body": body, "format": "markdown",
                   "word_count": 1, "pg_version": 1}
    ev["source"]["lsn"] = lsn
    ev["source"]["table"] = "text_content"
    return json.dumps(ev)


def test_backlog_of_large_rows_while_neo4j_is_down_stays_bounded(nx, project, tmp_path):
    # a real text_content event of this test's own row, as the template
    cid = new_id()
    nx.psql(f"""INSERT INTO content_items (id, tenant_id, project_id, content_type, title)
                VALUES ('{cid}', '{project['tenant']}', '{project['project']}', 'text', 'template');
                INSERT INTO text_content (content_id, body, word_count) VALUES ('{cid}', 'template', 1);""")
    template = wait_until(lambda: next((m["payload"] for m in nx.consume_all("nexus.high.content_item")
                                        if m.get("payload") and '"table":"text_content"' in m["payload"]
                                        and cid in m["payload"]), None), 120, what="a real text_content event")
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "content_item", lanes=("high",),
                                             configs=("max.message.bytes=3000000",))
    topic = f"{prefix}.high.content_item"
    ids = [str(uuid.uuid4()) for _ in range(ROWS)]
    neo4j_port = nx.env["NEXUS_NEO4J_URL"].rsplit(":", 1)[1].strip("/")
    proxy = Proxy(neo4j_port)
    proxy.cut()
    w = Worker(nx, "content_item", str(tmp_path / "w"), f"backlog-{uuid.uuid4().hex[:8]}",
               NEXUS_MAPPING=mapping, NEXUS_LANES="high",
               NEXUS_NEO4J_URL=f"http://127.0.0.1:{proxy.port}",
               NEXUS_BATCH_MAX_BYTES=LIMIT, NEXUS_BACKLOG_MAX_BYTES=LIMIT,
               NEXUS_RETRY_MAX_MS=500, NEXUS_LOG_LEVEL="debug")
    try:
        # started while Neo4j is down: it waits, holding nothing
        w.start()
        wait_until(lambda: w.log_text().count("could not create Neo4j constraints") >= 5, 60,
                   what="retries while Neo4j is down")
        proxy.restore()
        wait_until(lambda: "consuming as group" in w.log_text(), 120, what="the worker to start consuming")
        # down again, then the backlog arrives: batches fail and wait
        proxy.cut()
        for i, cid in enumerate(ids):
            body = (f"{i:04d}" + "x" * BODY)[:BODY]
            nx.kcat("-P", "-t", topic, "-p", "0", "-k", json.dumps({"content_id": cid}),
                    "-X", "message.max.bytes=3000000", input=text_event(template, cid, 1000 + i, body))
        wait_until(lambda: w.log_text().count("could not commit to Neo4j") >= 6, 120,
                   what="six retries of a batch while Neo4j is down")
        peak_down = peak_rss_kb(w.proc.pid)
        proxy.restore()
        wait_until(lambda: nx.cypher_value("MATCH (t:Text) WHERE t.id IN $ids AND size(t.body) = $n "
                                           "RETURN count(t)", {"ids": ids, "n": BODY}) == ROWS, 300,
                   what="every large row applied")
        peak = peak_rss_kb(w.proc.pid)
        assert w.proc.poll() is None, w.log_text()[-3000:]
        print(f"peak RSS while Neo4j was down: {peak_down} kB; after applying {ROWS} rows of "
              f"{BODY} bytes: {peak} kB; bound {RSS_BOUND_KB} kB")
        assert peak < RSS_BOUND_KB, f"peak RSS {peak} kB over {RSS_BOUND_KB} kB"
        assert not nx.consume_all(f"{prefix}.dlq", timeout=5)
    finally:
        if w.proc:
            w.stop()
        proxy.close()
        cleanup()
        # rows of scratch topics only: PostgreSQL never had them, so they
        # (and the parent placeholders they made) would be divergence to
        # every later nexus-verify
        nx.cypher("MATCH (n) WHERE (n:Text OR n:ContentItem) AND n.id IN $ids DETACH DELETE n",
                  {"ids": ids})
