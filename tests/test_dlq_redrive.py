"""nexus-dlq against the real stack: real events fail for a cause that can
be fixed (a Neo4j uniqueness constraint that rejects them), `list` groups
the dead letters, a dry run writes nothing, and once the constraint is gone
`redrive --execute` puts them back into their lane with their headers, the
worker applies them (graph and sync_status), and a second re-drive does
nothing. Everything travels on scratch topics (scratch_lanes), so no other
consumer ever sees these events."""
import json
import os
import subprocess
import uuid

import pytest

from nexus import BIN, ROOT, new_id as U, Worker, scratch_lanes, wait_until

PARTITIONS = 2


def headers(m):
    h = m.get("headers") or []
    return list(zip(h[0::2], h[1::2]))


def last_header(m, name):
    values = [v for k, v in headers(m) if k == name]
    return values[-1] if values else None


def end_offsets(nx, topic, partitions=PARTITIONS):
    """High watermark of each partition of a topic."""
    args = []
    for p in range(partitions):
        args += ["-t", f"{topic}:{p}:-1"]
    ends = {}
    for line in nx.kcat("-Q", *args).splitlines():
        f = line.split()
        if len(f) >= 4 and f[-2] == "offset":
            ends[int(f[-3].rstrip(":").split("[")[-1].rstrip("]"))] = int(f[-1])
    assert len(ends) == partitions, ends
    return ends


class Dlq:
    """bin/nexus-dlq with the stack's settings and a scratch mapping."""

    def __init__(self, nx, mapping):
        self.nx, self.mapping = nx, mapping

    def run(self, *args, check=True):
        p = subprocess.run([os.path.join(BIN, "nexus-dlq"), "--mapping", self.mapping, *args],
                           env=self.nx.worker_env(), capture_output=True, text=True, timeout=180, cwd=ROOT)
        if check:
            assert p.returncode == 0, f"nexus-dlq {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
        return p

    def json(self, *args):
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def scratch(nx, tmp_path):
    """Scratch lanes for the tag worker whose Tag label is one of this test's
    own, so a constraint on it touches nothing else in the graph."""
    path, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag", partitions=PARTITIONS)
    label = f"RedriveTag{uuid.uuid4().hex[:8]}"
    text = open(path).read()
    assert text.count('node = { label = "Tag";') == 1
    with open(path, "w") as f:
        f.write(text.replace('node = { label = "Tag";', f'node = {{ label = "{label}";'))
    yield path, prefix, label
    nx.cypher(f"MATCH (t:{label}) DETACH DELETE t")
    cleanup()


def new_tags(nx, project, colors):
    ids = [U() for _ in colors]
    values = ", ".join(f"('{i}', '{project['project']}', '{project['tenant']}', 'redrive-{i[:8]}', '{c}')"
                       for i, c in zip(ids, colors))
    nx.psql(f"INSERT INTO tags (id, project_id, tenant_id, name, color) VALUES {values}")
    return ids


def real_events(nx, ids):
    """The Debezium create events PostgreSQL produced for these tags."""
    def find():
        found = {}
        for m in nx.consume_all("nexus.normal.tag"):
            for i in ids:
                if m.get("payload") and f'"id":"{i}"' in m["payload"]:
                    found[i] = (m["key"], m["payload"])
        return found if len(found) == len(ids) else None
    found = wait_until(find, 120, what="the tags' real events")
    return [found[i] for i in ids]


def status(nx, ids):
    return dict(nx.rows("SELECT id, sync_status FROM tags WHERE id IN (" +
                        ", ".join(f"'{i}'" for i in ids) + ")"))


def test_redrive_after_the_cause_is_fixed(nx, project, tmp_path, scratch):
    mapping, prefix, label = scratch
    lane, dlq_topic = f"{prefix}.normal.tag", f"{prefix}.dlq"
    dlq = Dlq(nx, mapping)
    constraint = f"redrive_{label.lower()}"
    nx.cypher(f"CREATE CONSTRAINT {constraint} FOR (t:{label}) REQUIRE t.color IS UNIQUE")
    # one tag with its own colour, three sharing one: the constraint lets the
    # first of those in and rejects the other two
    ids = new_tags(nx, project, ["blue", "red", "red", "red"])
    events = real_events(nx, ids)
    # the red ones go to partition 1: the re-drive must bring them back there
    for (key, value), tid in zip(events, ids):
        nx.kcat("-P", "-t", lane, "-p", "0" if tid == ids[0] else "1", "-k", key, input=value)
    # and one event that can never apply (a number for a text column)
    broken = json.loads(events[0][1])
    broken["after"]["name"] = 42
    nx.kcat("-P", "-t", lane, "-p", "0", "-k", events[0][0], input=json.dumps(broken))

    w = Worker(nx, "tag", str(tmp_path / "w"), f"redrive-{uuid.uuid4().hex[:8]}",
               NEXUS_MAPPING=mapping, NEXUS_BATCH_MS=20)
    try:
        w.start()
        wait_until(lambda: sum(end_offsets(nx, dlq_topic).values()) == 3, 120, what="three dead letters")
        w.wait_caught_up(timeout=120)
        wait_until(lambda: nx.cypher_value(f"MATCH (t:{label}) RETURN count(t)") == 2, 60, what="two tags applied")
        st = wait_until(lambda: (lambda s: s if sorted(s.values()) == ["FAILED", "FAILED", "SUCCESS"] else None)(
            status(nx, ids[1:])), 60, what="one red tag SUCCESS, two FAILED")
        failed = sorted(i for i, s in st.items() if s == "FAILED")

        # list: two groups, counted, with positions and times
        listed = dlq.json("list")
        assert listed["topic"] == dlq_topic and listed["total"] == 3
        groups = {g["error_class"]: g for g in listed["groups"]}
        assert set(groups) == {"neo4j_permanent", "schema"}, listed
        g = groups["neo4j_permanent"]
        assert g["count"] == 2 and g["source_topic"] == lane
        assert "ConstraintValidationFailed" in g["reason"], g
        assert g["first"]["time"] <= g["last"]["time"]
        assert groups["schema"]["count"] == 1 and "name" in groups["schema"]["reason"]
        assert listed["groups"][0]["error_class"] == "neo4j_permanent"  # biggest group first
        text = dlq.run("list").stdout
        assert "2 x neo4j_permanent from " + lane in text and "1 x schema from " + lane in text

        shown = dlq.json("show", "--reason", "ConstraintValidationFailed")
        assert len(shown) == 2
        assert sorted(json.loads(s["value"])["after"]["id"] for s in shown) == failed
        for s in shown:
            hdr = dict(s["headers"])
            assert hdr["nexus.source.topic"] == lane and hdr["nexus.source.partition"] == "1"
        assert len(dlq.json("show", "--source-topic", lane, "--limit", "1")) == 1
        pos = f'{shown[0]["partition"]}:{shown[0]["offset"]}'
        assert len(dlq.json("show", "--offset", pos)) == 1

        # a reason nobody has: a clear message and a non-zero exit
        p = dlq.run("redrive", "--reason", "no-such-reason-anywhere", "--execute", check=False)
        assert p.returncode == 1
        assert "no dead letter in " + dlq_topic in p.stderr and "no-such-reason-anywhere" in p.stderr
        assert dlq.run("redrive", "--offset", "0:999999", check=False).returncode == 1
        assert dlq.run("redrive", "--offset", "5", check=False).returncode == 2  # 2 partitions: P:O

        # a dry run (the default) changes nothing
        before = end_offsets(nx, lane)
        out = dlq.run("redrive", "--reason", "ConstraintValidationFailed").stdout
        assert out.count("would re-drive") == 2 and "nothing written" in out
        assert end_offsets(nx, lane) == before

        # fix the cause, then re-drive for real
        nx.cypher(f"DROP CONSTRAINT {constraint}")
        out = dlq.run("redrive", "--reason", "ConstraintValidationFailed", "--execute").stdout
        assert "re-drove 2 dead letters, 0 skipped" in out, out
        after = end_offsets(nx, lane)
        assert after[0] == before[0] and after[1] == before[1] + 2, (before, after)

        redriven = [m for m in nx.consume_all(lane) if m["offset"] >= before[1] and m["partition"] == 1]
        assert len(redriven) == 2
        originals = {json.loads(v)["after"]["id"]: (k, v) for k, v in events}
        by_offset = {f'{s["partition"]}:{s["offset"]}': s for s in shown}
        for m in redriven:
            tid = json.loads(m["payload"])["after"]["id"]
            assert (m["key"], m["payload"]) == originals[tid]
            names = [k for k, _ in headers(m)]
            # the dead letter's headers are kept, the re-drive's added
            for n in ("nexus.reason", "nexus.error.class", "nexus.source.topic", "nexus.source.offset",
                      "nexus.worker", "nexus.time"):
                assert n in names, names
            assert last_header(m, "nexus.redrive.count") == "1"
            assert last_header(m, "nexus.redrive.dlq.topic") == dlq_topic
            src = by_offset[f'{last_header(m, "nexus.redrive.dlq.partition")}:'
                            f'{last_header(m, "nexus.redrive.dlq.offset")}']
            assert json.loads(src["value"])["after"]["id"] == tid
            assert last_header(m, "nexus.redrive.time")

        # the worker applies them: graph and write-back
        wait_until(lambda: nx.cypher_value(f"MATCH (t:{label} {{color: 'red'}}) RETURN count(t)") == 3,
                   120, what="re-driven tags in Neo4j")
        wait_until(lambda: set(status(nx, ids).values()) == {"SUCCESS"}, 120, what="sync_status SUCCESS")
        assert sum(end_offsets(nx, dlq_topic).values()) == 3  # nothing failed again

        # a second re-drive does nothing, unless asked --again
        out = dlq.run("redrive", "--reason", "ConstraintValidationFailed", "--execute").stdout
        assert "re-drove 0 dead letters, 2 skipped" in out and out.count("already re-driven") == 2, out
        assert end_offsets(nx, lane) == after
        out = dlq.run("redrive", "--reason", "ConstraintValidationFailed", "--again").stdout
        assert out.count("would re-drive") == 2

        # an event that still cannot apply dies again, keeping its history
        out = dlq.run("redrive", "--class", "schema", "--execute").stdout
        assert "re-drove 1 dead letter," in out
        wait_until(lambda: sum(end_offsets(nx, dlq_topic).values()) == 4, 120, what="the broken event dead again")
        again = [s for s in dlq.json("show", "--class", "schema") if "nexus.redrive.count" in dict(s["headers"])]
        assert len(again) == 1
        names = [k for k, _ in again[0]["headers"]]
        assert names.count("nexus.reason") == 2 and dict(again[0]["headers"])["nexus.redrive.count"] == "1"
        assert dlq.json("list")["total"] == 4
        assert w.proc.poll() is None
    finally:
        w.stop()
        if any(r["name"] == constraint for r in nx.cypher("SHOW CONSTRAINTS YIELD name")):
            nx.cypher(f"DROP CONSTRAINT {constraint}")


def test_redrive_refuses_a_topic_that_is_not_a_lane(nx, tmp_path):
    """A dead letter naming a source topic outside the mapping's lanes is
    never produced anywhere, nor is anything else of that run."""
    mapping, prefix, cleanup = scratch_lanes(nx, str(tmp_path / "scratch"), "tag", partitions=1)
    dlq_topic = f"{prefix}.dlq"
    try:
        key = json.dumps({"id": U()})
        common = ["-H", "nexus.error.class=schema", "-H", "nexus.source.partition=0",
                  "-H", "nexus.source.offset=7", "-H", "nexus.worker=tag"]
        nx.kcat("-P", "-t", dlq_topic, "-p", "0", "-k", key, "-H", "nexus.reason=made up",
                "-H", f"nexus.source.topic={prefix}.normal.tag", *common, input="{}")
        nx.kcat("-P", "-t", dlq_topic, "-p", "0", "-k", key, "-H", "nexus.reason=made up",
                "-H", "nexus.source.topic=nexus.normal.tag", *common, input="{}")
        wait_until(lambda: len(nx.consume_all(dlq_topic)) == 2, 60, what="two dead letters")
        dlq = Dlq(nx, mapping)
        assert dlq.json("list")["total"] == 2
        before = end_offsets(nx, f"{prefix}.normal.tag", 1)
        p = dlq.run("redrive", "--reason", "made up", "--execute", check=False)
        assert p.returncode == 1
        assert "not a lane topic" in p.stderr and "nexus.normal.tag" in p.stderr and "nothing re-driven" in p.stderr
        assert end_offsets(nx, f"{prefix}.normal.tag", 1) == before
        # the offset form for a one-partition DLQ, and the one that may go
        out = dlq.run("redrive", "--offset", "0", "--execute").stdout
        assert "re-drove 1 dead letter," in out
        assert end_offsets(nx, f"{prefix}.normal.tag", 1)[0] == before[0] + 1
    finally:
        cleanup()


def test_usage_errors_exit_2(nx, tmp_path):
    exe = os.path.join(BIN, "nexus-dlq")
    for args in (["redrive"], ["redrive", "--reason", "x", "--dry-run", "--execute"], ["bogus"],
                 ["list", "--reason", "x"], ["show", "--offset", "a:b"]):
        p = subprocess.run([exe, *args], env=nx.worker_env(), capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert p.stderr.strip()
