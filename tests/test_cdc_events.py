"""Debezium's change events, as they arrive on the lane topics: every mapped
table's insert, update and delete reaches the topic of its lane and worker,
with op, before/after, source.table and source.lsn right."""
import json
import os
import subprocess
import time
import uuid

import pytest

from nexus import new_id as U, ROOT, Stack, wait_until


def describe():
    out = subprocess.run([os.path.join(ROOT, "bin", "nexus-schema"), "describe"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        table = line.split()[0]
        if " none " in line:
            continue
        lane = line.split("lane=")[1].split()[0]
        worker = line.split("worker=")[1].split()[0]
        res[table] = f"nexus.{lane}.{worker}"
    return res


def since(nx, topic, ts_ms):
    """Events of a topic from a timestamp on (kcat -o s@), as dicts."""
    out = nx.kcat("-C", "-t", topic, "-o", f"s@{ts_ms}", "-e", "-J", "-q", timeout=120)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# (table, key columns, insert SQL, update SQL, delete SQL) built from one set of ids
def statements(i):
    return [
        ("tenants", f"INSERT INTO tenants (id, name, slug) VALUES ('{i['t']}', 'cdc', 'cdc-{i['t'][:8]}')",
         f"UPDATE tenants SET plan = 'team' WHERE id = '{i['t']}'", f"DELETE FROM tenants WHERE id = '{i['t']}'", i["t"]),
        ("users", f"INSERT INTO users (id, tenant_id, email, display_name) VALUES ('{i['u']}', '{i['t']}', 'c@x', 'C')",
         f"UPDATE users SET display_name = 'D' WHERE id = '{i['u']}'", f"DELETE FROM users WHERE id = '{i['u']}'", i["u"]),
        ("programs", f"INSERT INTO programs (id, tenant_id, name) VALUES ('{i['pg']}', '{i['t']}', 'p')",
         f"UPDATE programs SET name = 'q' WHERE id = '{i['pg']}'", f"DELETE FROM programs WHERE id = '{i['pg']}'", i["pg"]),
        ("projects", f"INSERT INTO projects (id, program_id, tenant_id, name) VALUES ('{i['p']}', '{i['pg']}', '{i['t']}', 'p')",
         f"UPDATE projects SET status = 'done' WHERE id = '{i['p']}'", f"DELETE FROM projects WHERE id = '{i['p']}'", i["p"]),
        ("project_memberships", f"INSERT INTO project_memberships (project_id, user_id) VALUES ('{i['p']}', '{i['u']}')",
         f"UPDATE project_memberships SET role = 'admin' WHERE project_id = '{i['p']}'",
         f"DELETE FROM project_memberships WHERE project_id = '{i['p']}'", i["p"]),
        ("threads", f"INSERT INTO threads (id, project_id, tenant_id, title) VALUES ('{i['th']}', '{i['p']}', '{i['t']}', 't'), "
                    f"('{i['th2']}', '{i['p']}', '{i['t']}', 't2')",
         f"UPDATE threads SET title = 'u' WHERE id = '{i['th']}'", f"DELETE FROM threads WHERE id = '{i['th']}'", i["th"]),
        ("thread_relationships", f"INSERT INTO thread_relationships (parent_thread_id, child_thread_id) VALUES ('{i['th']}', '{i['th2']}')",
         f"UPDATE thread_relationships SET relationship_type = 'fork' WHERE parent_thread_id = '{i['th']}'",
         f"DELETE FROM thread_relationships WHERE parent_thread_id = '{i['th']}'", i["th"]),
        ("content_items", f"INSERT INTO content_items (id, tenant_id, project_id, content_type, title) VALUES ('{i['c']}', '{i['t']}', '{i['p']}', 'text', 'c')",
         f"UPDATE content_items SET title = 'd' WHERE id = '{i['c']}'", f"DELETE FROM content_items WHERE id = '{i['c']}'", i["c"]),
        ("text_content", f"INSERT INTO text_content (content_id, body) VALUES ('{i['c']}', 'b')",
         f"UPDATE text_content SET body = 'bb' WHERE content_id = '{i['c']}'", f"DELETE FROM text_content WHERE content_id = '{i['c']}'", i["c"]),
        ("code_content", f"INSERT INTO code_content (content_id, language, source) VALUES ('{i['c']}', 'c', 's')",
         f"UPDATE code_content SET source = 'ss' WHERE content_id = '{i['c']}'", f"DELETE FROM code_content WHERE content_id = '{i['c']}'", i["c"]),
        ("content_chunks", f"INSERT INTO content_chunks (id, content_id, chunk_index, chunk_text) VALUES ('{i['ch']}', '{i['c']}', 0, 'x')",
         f"UPDATE content_chunks SET chunk_text = 'y' WHERE id = '{i['ch']}'", f"DELETE FROM content_chunks WHERE id = '{i['ch']}'", i["ch"]),
        ("tags", f"INSERT INTO tags (id, project_id, tenant_id, name) VALUES ('{i['tg']}', '{i['p']}', '{i['t']}', 'g')",
         f"UPDATE tags SET color = 'red' WHERE id = '{i['tg']}'", f"DELETE FROM tags WHERE id = '{i['tg']}'", i["tg"]),
        ("content_tags", f"INSERT INTO content_tags (content_id, tag_id) VALUES ('{i['c']}', '{i['tg']}')",
         f"UPDATE content_tags SET created_at = now() WHERE content_id = '{i['c']}'",
         f"DELETE FROM content_tags WHERE content_id = '{i['c']}'", i["c"]),
        ("thread_content", f"INSERT INTO thread_content (thread_id, content_id) VALUES ('{i['th']}', '{i['c']}')",
         f"UPDATE thread_content SET position = 5 WHERE thread_id = '{i['th']}'",
         f"DELETE FROM thread_content WHERE thread_id = '{i['th']}'", i["th"]),
        ("messages", f"INSERT INTO messages (id, thread_id, tenant_id, role, body) VALUES ('{i['m']}', '{i['th']}', '{i['t']}', 'user', 'm'), "
                     f"('{i['m2']}', '{i['th']}', '{i['t']}', 'assistant', 'n')",
         f"UPDATE messages SET body = 'mm' WHERE id = '{i['m']}'", f"DELETE FROM messages WHERE id = '{i['m']}'", i["m"]),
        ("message_relationships", f"INSERT INTO message_relationships (source_message_id, target_message_id) VALUES ('{i['m']}', '{i['m2']}')",
         f"UPDATE message_relationships SET relationship_type = 'alternative' WHERE source_message_id = '{i['m']}'",
         f"DELETE FROM message_relationships WHERE source_message_id = '{i['m']}'", i["m"]),
        ("message_context_items", f"INSERT INTO message_context_items (message_id, content_id) VALUES ('{i['m']}', '{i['c']}')",
         f"UPDATE message_context_items SET relevance_score = 0.5 WHERE message_id = '{i['m']}'",
         f"DELETE FROM message_context_items WHERE message_id = '{i['m']}'", i["m"]),
    ]


@pytest.fixture(scope="module")
def changes(nx):
    ids = {k: U() for k in ["t", "u", "pg", "p", "th", "th2", "c", "ch", "tg", "m", "m2"]}
    stmts = statements(ids)
    t0 = int(time.time() * 1000) - 2000
    nx.psql(";\n".join(s[1] for s in stmts) + ";")
    nx.psql(";\n".join(s[2] for s in stmts) + ";")
    # children first, so each table's own delete is an event of its own
    nx.psql(";\n".join(s[3] for s in reversed(stmts)) + ";")
    return t0, stmts


def test_every_table_is_covered():
    assert set(describe()) == {s[0] for s in statements({k: U() for k in
                                                          ["t", "u", "pg", "p", "th", "th2", "c", "ch", "tg", "m", "m2"]})}


@pytest.mark.parametrize("table", sorted(describe()))
def test_insert_update_delete_reach_the_lane_topic(nx, changes, table):
    t0, stmts = changes
    topics = describe()
    key_id = next(s[4] for s in stmts if s[0] == table)

    def ours():
        evs = []
        for m in since(nx, topics[table], t0):
            if not m.get("payload"):
                continue
            v = json.loads(m["payload"])
            row = v.get("after") or v.get("before") or {}
            if v["source"]["table"] == table and key_id in json.dumps(row):
                evs.append((m, v))
        return evs if [v["op"] for _, v in evs][:3] == ["c", "u", "d"] else None

    evs = wait_until(ours, 120, interval=1, what=f"c/u/d events of {table} on {topics[table]}")
    (mc, c), (mu, u), (md, d) = evs[:3]
    assert c["before"] is None and c["after"] is not None
    assert u["before"] is not None and u["after"] is not None, "REPLICA IDENTITY FULL gives the before image"
    assert u["before"] != u["after"]
    assert d["before"] is not None and d["after"] is None
    assert c["source"]["lsn"] < u["source"]["lsn"] < d["source"]["lsn"]
    for v in (c, u, d):
        assert v["source"]["schema"] == "public" and v["source"]["db"] == "contextnexus"
        assert v["source"].get("snapshot") in (None, "false", False)
    # keyed by the primary key: all three on one partition, in order
    assert mc["partition"] == mu["partition"] == md["partition"]
    assert mc["offset"] < mu["offset"] < md["offset"]
    assert json.loads(mc["key"]) == json.loads(md["key"])


def test_no_table_leaks_into_another_lane_topic(nx, changes):
    t0, stmts = changes
    topics = describe()
    for topic in set(topics.values()):
        for m in since(nx, topic, t0):
            if m.get("payload"):
                table = json.loads(m["payload"])["source"]["table"]
                assert topics[table] == topic, f"{table} event on {topic}"
