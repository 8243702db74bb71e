"""Hostile input: the events of tests/cases/hostile/ (truncated JSON, wrong
types, multi-MB strings, deep nesting, invalid UTF-8, unknown ops, missing
source or payload, Cypher and SQL in values, column, table and schema
names, a table named like a label, nulls and out-of-range numbers) go to a
real tag_worker on scratch topics, in one batch with real events of rows
whose values and column names carry quotes and Cypher/SQL fragments.

Every hostile event reaches the DLQ with its reason and class in the
headers, the worker never crashes, the valid events are applied with their
values stored verbatim, and the graph's labels, relationship types,
property keys and counts change only by what the valid events did.

Case files: {"why", "value" | "value_hex" | "value_gen", "class"?,
"reason"?}; {ID}, {PROJECT} and {TENANT} are replaced by fresh ids;
value_gen builds a huge value: template with hole replaced by repeat *
count (or count nested repeat_open ... repeat_close)."""
import glob
import json
import os
import subprocess
import uuid

import pytest

from nexus import Worker, new_id, scratch_lanes, wait_until

CASES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "cases", "hostile", "*.json")))
# What the valid rows carry: quotes and Cypher/SQL fragments, stored verbatim.
HOSTILE_NAMES = [
    "'}) MATCH (n) DETACH DELETE n //",
    "Robert'); DROP TABLE tags; --",
    "\"dq\" `bt` {brace} $param \\ backslash \u00e9\u6f22",
]
# Column names the valid events also carry (not mapped: ignored).
HOSTILE_COLUMNS = {"name`}) DETACH DELETE n //": "x", "x; DROP TABLE tags; --": 1, "Tag": "label?"}
MAX_BYTES = 24 * 1024 * 1024


def case_value(case, ids):
    if "value" in case:
        raw = case["value"].encode()
    elif "value_hex" in case:
        raw = bytes.fromhex(case["value_hex"])
    else:
        g = case["value_gen"]
        if "repeat_open" in g:
            fill = g["repeat_open"] * g["count"] + g["repeat_close"] * g["count"]
        else:
            fill = g["repeat"] * g["count"]
        raw = g["template"].replace(g["hole"], fill).encode()
    for k, v in ids.items():
        raw = raw.replace(("{%s}" % k).encode(), v.encode())
    return raw


def graph_shape(nx):
    """Labels, relationship types, property keys, and counts of each."""
    labels = sorted(r["label"] for r in nx.cypher("CALL db.labels() YIELD label RETURN label"))
    types = sorted(r["t"] for r in nx.cypher("CALL db.relationshipTypes() YIELD relationshipType AS t RETURN t"))
    keys = sorted(r["k"] for r in nx.cypher("CALL db.propertyKeys() YIELD propertyKey AS k RETURN k"))
    counts = {f":{l}": nx.cypher_value(f"MATCH (n:`{l}`) RETURN count(n)") for l in labels}
    counts.update({f"-{t}-": nx.cypher_value(f"MATCH ()-[r:`{t}`]->() RETURN count(r)") for t in types})
    return labels, types, keys, counts


def read_all(nx, topic):
    """Every message of a topic as kcat -J dicts; values may hold invalid
    UTF-8 and tens of MB."""
    p = subprocess.run(["kcat", "-b", nx.env["NEXUS_KAFKA_BOOTSTRAP"], "-C", "-t", topic, "-o", "beginning",
                        "-e", "-J", "-q", "-X", f"fetch.message.max.bytes={MAX_BYTES}"],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.decode("utf-8", "replace").splitlines() if line.strip()]


def headers(msg):
    h = msg.get("headers") or []
    return dict(zip(h[0::2], h[1::2]))


def test_hostile_events_reach_the_dlq_and_change_nothing(nx, project, tmp_path):
    assert len(CASES) >= 40
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag",
                                             configs=(f"max.message.bytes={MAX_BYTES}",))
    topic, dlq = f"{prefix}.normal.tag", f"{prefix}.dlq"
    w = Worker(nx, "tag", str(tmp_path / "w"), f"hostile-{uuid.uuid4().hex[:8]}",
               NEXUS_MAPPING=mapping, NEXUS_BATCH_MS=3000)
    try:
        # real rows with hostile values; their Debezium events are the valid
        # events of the batch (so the graph stays what PostgreSQL says)
        tag_ids = [new_id() for _ in HOSTILE_NAMES]
        values = ", ".join(
            f"('{i}', '{project['project']}', '{project['tenant']}', '{n.replace(chr(39), chr(39) * 2)}')"
            for i, n in zip(tag_ids, HOSTILE_NAMES))
        nx.psql(f"INSERT INTO tags (id, project_id, tenant_id, name) VALUES {values}")
        real = {}
        for tid in tag_ids:
            m = wait_until(lambda: [m for m in nx.consume_all("nexus.normal.tag")
                                    if m.get("payload") and f'"id":"{tid}"' in m["payload"]], 120,
                           what="the real event of a hostile-valued tag")[0]
            v = json.loads(m["payload"])
            if tid == tag_ids[0]:
                v["after"].update(HOSTILE_COLUMNS)
            real[tid] = (m["key"], json.dumps(v).encode())
        # the project's node is in the graph first (an org worker brings
        # it), so the tags' parent relationship is all the valid events add
        org = Worker(nx, "org", str(tmp_path / "org"), f"hostile-org-{uuid.uuid4().hex[:8]}")
        org.start()
        wait_until(lambda: nx.cypher_value("MATCH (p:Project {id: $id}) WHERE p.srcLsn IS NOT NULL "
                                           "RETURN count(p)", {"id": project["project"]}) == 1,
                   300, what="the project in the graph")
        assert org.stop() == 0
        before = graph_shape(nx)

        # hostile and valid events interleaved, one file per message
        files, expect = [], {}
        ids = {"ID": new_id(), "PROJECT": project["project"], "TENANT": project["tenant"]}
        valid_iter = iter(real.values())
        for k, path in enumerate(CASES):
            case = json.load(open(path))
            f = tmp_path / f"m{len(files):03d}"
            f.write_bytes(case_value(case, dict(ids, ID=new_id())))
            expect[len(files)] = (os.path.basename(path), case)
            files.append(str(f))
            if k % 14 == 7:
                f = tmp_path / f"m{len(files):03d}"
                f.write_bytes(next(valid_iter)[1])
                files.append(str(f))
        for _, v in valid_iter:
            f = tmp_path / f"m{len(files):03d}"
            f.write_bytes(v)
            files.append(str(f))
        nx.kcat("-P", "-t", topic, "-p", "0", "-k", "hostile", "-X", f"message.max.bytes={MAX_BYTES}",
                *files, timeout=300)
        assert sum(int(l.split()[-1]) for l in nx.kcat("-Q", "-t", f"{topic}:0:-1").splitlines()
                   if "offset" in l) == len(files)

        w.start()
        dead = wait_until(lambda: (lambda d: d if len(d) >= len(expect) else None)(read_all(nx, dlq)),
                          240, interval=2, what=f"{len(expect)} dead letters")
        wait_until(lambda: nx.cypher_value("MATCH (t:Tag) WHERE t.id IN $ids AND t.srcLsn IS NOT NULL "
                                           "RETURN count(t)", {"ids": tag_ids}) == len(tag_ids),
                   120, what="the valid events applied")
        w.wait_caught_up(timeout=120)
        assert w.proc.poll() is None, f"the worker died:\n{w.log_text()[-3000:]}"

        # every hostile event, and only those, in the DLQ with a reason
        by_offset = {}
        for m in dead:
            h = headers(m)
            assert h.get("nexus.source.topic") == topic, h
            by_offset[int(h["nexus.source.offset"])] = (m, h)
        missing = {o: expect[o][0] for o in expect if o not in by_offset}
        stray = sorted(o for o in by_offset if o not in expect)
        assert not missing and not stray and len(dead) == len(expect), (
            f"hostile events not in the DLQ: {missing}; dead letters of valid events at {stray}; "
            f"{len(dead)} dead letters for {len(expect)} hostile events\n{w.log_text()[-4000:]}")
        for off, (name, case) in expect.items():
            m, h = by_offset[off]
            assert h.get("nexus.reason"), f"{name}: no reason: {h}"
            assert h.get("nexus.worker") == "tag", f"{name}: {h}"
            if case.get("class"):
                assert h.get("nexus.error.class") == case["class"], f"{name}: {h}"
            if case.get("reason"):
                assert case["reason"] in h["nexus.reason"], f"{name}: {h['nexus.reason']!r}"
            # a letter over the producer's 1 MB limit is cut, and says so
            size = len(case_value(case, ids))
            if size > 1000000:
                assert h.get("nexus.truncated", "").endswith(f"value={size}"), f"{name}: {h}"
            else:
                assert "nexus.truncated" not in h, f"{name}: {h}"

        # the valid events: stored verbatim, hostile columns ignored
        for tid, name in zip(tag_ids, HOSTILE_NAMES):
            assert nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN t.name", {"id": tid}) == name
        wait_until(lambda: nx.scalar("SELECT count(*) FROM tags WHERE sync_status = 'SUCCESS' AND id IN (" +
                                     ", ".join(f"'{i}'" for i in tag_ids) + ")") == str(len(tag_ids)),
                   60, what="write-back of the valid rows")
        assert int(nx.scalar("SELECT count(*) FROM tags")) > 0  # the table is still there

        # nothing but the valid tags' own elements is new in the graph; on a
        # fresh graph those may be the first Tag, HAS_TAG and parent nodes
        labels, types, keys, counts = graph_shape(nx)
        own = nx.cypher("MATCH (p)-[r:HAS_TAG]->(t:Tag) WHERE t.id IN $ids "
                        "RETURN labels(p) AS pl, keys(p) AS pk, keys(r) AS rk, keys(t) AS tk", {"ids": tag_ids})
        parent_labels = {l for r in own for l in r["pl"]}
        own_keys = {k for r in own for k in r["pk"] + r["rk"] + r["tk"]}
        assert set(before[0]) <= set(labels) <= set(before[0]) | {"Tag"} | parent_labels, \
            f"labels changed: {before[0]} -> {labels}"
        assert set(before[1]) <= set(types) <= set(before[1]) | {"HAS_TAG"}, \
            f"relationship types changed: {before[1]} -> {types}"
        assert set(before[2]) <= set(keys) <= set(before[2]) | own_keys, \
            f"property keys changed: {set(keys) ^ set(before[2])}"
        want = dict(before[3])
        want[":Tag"] = want.get(":Tag", 0) + len(tag_ids)
        want["-HAS_TAG-"] = want.get("-HAS_TAG-", 0) + len(tag_ids)
        for label in parent_labels:  # a parent may be new here (a placeholder)
            assert counts[f":{label}"] >= want.get(f":{label}", 0)
            want[f":{label}"] = counts[f":{label}"]
        assert counts == want, {k: (want.get(k), counts.get(k)) for k in set(want) | set(counts)
                                if want.get(k) != counts.get(k)}
        assert "ERROR: AddressSanitizer" not in w.log_text() and "runtime error:" not in w.log_text()
    finally:
        rc = w.stop() if w.proc else 0
        cleanup()
    assert rc == 0, f"tag_worker exited {rc}"
