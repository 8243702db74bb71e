"""End-to-end: PostgreSQL changes reach Neo4j through Debezium, Kafka and
the five workers, for every row of the mapping, with the write-back."""
import os
import uuid

import pytest

from nexus import new_id as U, Stack, stop_worker, wait_until

WORKERS = ["org", "thread", "content_item", "tag", "message"]


@pytest.fixture(scope="module")
def workers(nx, tmp_path_factory):
    logs = tmp_path_factory.mktemp("workers")
    group = f"e2e-{uuid.uuid4().hex[:8]}"
    procs = {w: nx.start_worker(w, logs / f"{w}.log", NEXUS_GROUP_ID=f"{group}-{w}",
                                NEXUS_BATCH_MS=20, NEXUS_STATS_DIR=str(logs))
             for w in WORKERS}
    yield procs
    for w, p in procs.items():
        rc = stop_worker(p)
        assert rc == 0, f"{w}_worker exited {rc}: {(logs / f'{w}.log').read_text()[-3000:]}"


def node(nx, label, key, timeout=90):
    # srcLsn: the node's own event applied, not a stub another worker's
    # relationship created first (a slow worker, e.g. the ASan build)
    return wait_until(lambda: (nx.cypher(f"MATCH (n:{label} {{id: $id}}) WHERE n.srcLsn IS NOT NULL "
                                         f"RETURN properties(n) AS p", {"id": key})
                               or [None])[0], timeout, what=f"{label} {key} in Neo4j")["p"]


def rel_count(nx, pattern, params):
    return nx.cypher_value(f"MATCH {pattern} RETURN count(*) AS c", params)


@pytest.fixture(scope="module")
def world(nx, workers):
    """One row in every mapped table, inserted in one go."""
    ids = {k: U() for k in ["tenant", "user", "program", "project", "thread", "thread2", "ci_text",
                            "ci_code", "chunk", "tag", "msg", "msg2"]}
    nx.psql(f"""
    BEGIN;
    INSERT INTO tenants (id, name, slug, settings) VALUES ('{ids['tenant']}', 'Acme ''quoted''', 'acme-{ids['tenant'][:8]}', '{{"region": "eu"}}');
    INSERT INTO users (id, tenant_id, email, display_name, role, last_login_at)
      VALUES ('{ids['user']}', '{ids['tenant']}', 'a@x.org', 'Ada', 'admin', '2026-05-01 10:11:12.123456');
    INSERT INTO programs (id, tenant_id, name) VALUES ('{ids['program']}', '{ids['tenant']}', 'Prog');
    INSERT INTO projects (id, program_id, tenant_id, name, start_date, budget)
      VALUES ('{ids['project']}', '{ids['program']}', '{ids['tenant']}', 'Proj', '2026-02-03', 1234.56);
    INSERT INTO project_memberships (project_id, user_id, role) VALUES ('{ids['project']}', '{ids['user']}', 'owner');
    INSERT INTO threads (id, project_id, tenant_id, created_by, title) VALUES
      ('{ids['thread']}', '{ids['project']}', '{ids['tenant']}', '{ids['user']}', 'T1'),
      ('{ids['thread2']}', '{ids['project']}', '{ids['tenant']}', '{ids['user']}', 'T2');
    INSERT INTO thread_relationships (parent_thread_id, child_thread_id, relationship_type) VALUES ('{ids['thread']}', '{ids['thread2']}', 'branch');
    INSERT INTO content_items (id, tenant_id, project_id, content_type, title, metadata, token_count) VALUES
      ('{ids['ci_text']}', '{ids['tenant']}', '{ids['project']}', 'text', 'Doc', '{{"k": [1, 2]}}', 42),
      ('{ids['ci_code']}', '{ids['tenant']}', '{ids['project']}', 'code', 'Code', '{{}}', 7);
    INSERT INTO text_content (content_id, body, word_count) VALUES ('{ids['ci_text']}', 'hello graph', 2);
    INSERT INTO code_content (content_id, language, source, line_count) VALUES ('{ids['ci_code']}', 'c', 'int main(void) {{ return 0; }}', 1);
    INSERT INTO content_chunks (id, content_id, chunk_index, chunk_text, keywords) VALUES ('{ids['chunk']}', '{ids['ci_text']}', 0, 'hello', ARRAY['a','b']);
    INSERT INTO tags (id, project_id, tenant_id, name) VALUES ('{ids['tag']}', '{ids['project']}', '{ids['tenant']}', 'urgent');
    INSERT INTO content_tags (content_id, tag_id) VALUES ('{ids['ci_text']}', '{ids['tag']}');
    INSERT INTO thread_content (thread_id, content_id, relevance_score, position) VALUES ('{ids['thread']}', '{ids['ci_text']}', 0.8500, 3);
    INSERT INTO messages (id, thread_id, tenant_id, user_id, role, body) VALUES
      ('{ids['msg']}', '{ids['thread']}', '{ids['tenant']}', '{ids['user']}', 'user', 'question?'),
      ('{ids['msg2']}', '{ids['thread']}', '{ids['tenant']}', NULL, 'assistant', 'answer.');
    INSERT INTO message_relationships (source_message_id, target_message_id) VALUES ('{ids['msg']}', '{ids['msg2']}');
    INSERT INTO message_context_items (message_id, content_id, relevance_score) VALUES ('{ids['msg2']}', '{ids['ci_text']}', 0.5);
    COMMIT;
    """)
    return ids


NODE_CASES = [  # (id key, label, expected properties)
    ("tenant", "Tenant", {"name": "Acme 'quoted'", "settings": '{"region": "eu"}'}),
    ("user", "User", {"email": "a@x.org", "role": "admin", "isActive": True}),
    ("program", "Program", {"name": "Prog"}),
    ("project", "Project", {"name": "Proj", "budget": 1234.56}),
    ("thread", "Thread", {"title": "T1", "isArchived": False}),
    ("ci_text", "ContentItem", {"title": "Doc", "contentType": "text", "tokenCount": 42}),
    ("ci_text", "Text", {"body": "hello graph", "wordCount": 2}),
    ("ci_code", "Code", {"language": "c", "source": "int main(void) { return 0; }"}),
    ("chunk", "ContentChunk", {"text": "hello", "keywords": ["a", "b"], "chunkIndex": 0}),
    ("tag", "Tag", {"name": "urgent"}),
    ("msg", "Message", {"body": "question?", "role": "user"}),
]


@pytest.mark.parametrize("key,label,expected", NODE_CASES, ids=[c[1] for c in NODE_CASES])
def test_node_rows_become_nodes(nx, world, key, label, expected):
    props = node(nx, label, world[key])
    for k, v in expected.items():
        assert props.get(k) == v, f"{label}.{k}: {props.get(k)!r} != {v!r}"
    assert props["srcLsn"] > 0


def test_temporal_types(nx, world):
    node(nx, "User", world["user"])
    row = nx.cypher("MATCH (u:User {id: $id}) RETURN toString(u.lastLoginAt) AS l, "
                    "valueType(u.lastLoginAt) AS lt, valueType(u.createdAt) AS ct", {"id": world["user"]})[0]
    assert row["l"] == "2026-05-01T10:11:12.123456"
    assert row["lt"].startswith("LOCAL DATETIME") and row["ct"].startswith("ZONED DATETIME")
    node(nx, "Project", world["project"])
    assert nx.cypher_value("MATCH (p:Project {id: $id}) RETURN toString(p.startDate)", {"id": world["project"]}) == "2026-02-03"


REL_CASES = [
    ("(:Tenant {id: $a})-[:HAS_USER]->(:User {id: $b})", "tenant", "user"),
    ("(:Tenant {id: $a})-[:HAS_PROGRAM]->(:Program {id: $b})", "tenant", "program"),
    ("(:Program {id: $a})-[:HAS_PROJECT]->(:Project {id: $b})", "program", "project"),
    ("(:Project {id: $a})-[:HAS_MEMBER {role: 'owner'}]->(:User {id: $b})", "project", "user"),
    ("(:Project {id: $a})-[:HAS_THREAD]->(:Thread {id: $b})", "project", "thread"),
    ("(:Thread {id: $a})-[:PARENT_OF {relationshipType: 'branch'}]->(:Thread {id: $b})", "thread", "thread2"),
    ("(:Project {id: $a})-[:HAS_CONTENT]->(:ContentItem {id: $b})", "project", "ci_text"),
    ("(:ContentItem {id: $a})-[:HAS_CONTENT]->(:Text {id: $b})", "ci_text", "ci_text"),
    ("(:ContentItem {id: $a})-[:HAS_CONTENT]->(:Code {id: $b})", "ci_code", "ci_code"),
    ("(:ContentItem {id: $a})-[:HAS_CHUNK]->(:ContentChunk {id: $b})", "ci_text", "chunk"),
    ("(:Project {id: $a})-[:HAS_TAG]->(:Tag {id: $b})", "project", "tag"),
    ("(:ContentItem {id: $a})-[:TAGGED_WITH]->(:Tag {id: $b})", "ci_text", "tag"),
    ("(:Thread {id: $a})-[:INCLUDES {relevanceScore: 0.85, position: 3}]->(:ContentItem {id: $b})", "thread", "ci_text"),
    ("(:Thread {id: $a})-[:CONTAINS_MESSAGE]->(:Message {id: $b})", "thread", "msg"),
    ("(:Message {id: $a})-[:REPLIED_WITH]->(:Message {id: $b})", "msg", "msg2"),
    ("(:Message {id: $a})-[:USED_CONTEXT {relevanceScore: 0.5}]->(:ContentItem {id: $b})", "msg2", "ci_text"),
]


@pytest.mark.parametrize("pattern,a,b", REL_CASES, ids=[c[0].split("[:")[1].split("]")[0].split(" ")[0] + f"-{c[1]}" for c in REL_CASES])
def test_relationships(nx, world, pattern, a, b):
    wait_until(lambda: rel_count(nx, pattern, {"a": world[a], "b": world[b]}) == 1, 90,
               what=pattern)


WRITEBACK = [("tenants", "id", "tenant", None), ("content_items", "id", "ci_text", "neo4j_node_id"),
             ("messages", "id", "msg", "neo4j_node_id"), ("threads", "id", "thread", "neo4j_node_id"),
             ("content_chunks", "id", "chunk", "neo4j_node_id")]


@pytest.mark.parametrize("table,col,key,idcol", WRITEBACK, ids=[w[0] for w in WRITEBACK])
def test_writeback(nx, world, table, col, key, idcol):
    sel = f"sync_status, last_sync_timestamp IS NOT NULL{', ' + idcol if idcol else ''}"
    row = wait_until(lambda: [r for r in nx.rows(f"SELECT {sel} FROM {table} WHERE {col} = '{world[key]}'")
                              if r[0] == "SUCCESS"], 90, what=f"{table} SUCCESS")[0]
    assert row[1] == "t"
    if idcol:
        eid = nx.cypher_value("MATCH (n {id: $id}) WHERE elementId(n) = $eid RETURN count(n)",
                              {"id": world[key], "eid": row[2]})
        assert eid == 1, f"{idcol} {row[2]} is not the element id of the node"


def test_link_writeback(nx, world):
    wait_until(lambda: nx.scalar(f"SELECT sync_status FROM thread_content WHERE thread_id = '{world['thread']}'") == "SUCCESS",
               90, what="thread_content SUCCESS")
    eid = nx.scalar(f"SELECT neo4j_relationship_id FROM thread_content WHERE thread_id = '{world['thread']}'")
    assert nx.cypher_value("MATCH ()-[r:INCLUDES]->() WHERE elementId(r) = $e RETURN count(r)", {"e": eid}) == 1


def test_update_delete_and_temporal_versions(nx, world):
    for label in ("ContentItem", "Message"):
        node(nx, label, world["ci_text" if label == "ContentItem" else "msg2"])
    wait_until(lambda: rel_count(nx, "(:Thread {id: $a})-[:INCLUDES]->(:ContentItem {id: $b})",
                                 {"a": world["thread"], "b": world["ci_text"]}) == 1, 90, what="INCLUDES")
    nx.psql(f"""
    UPDATE content_items SET title = 'Doc v2', description = NULL WHERE id = '{world['ci_text']}';
    UPDATE thread_content SET relevance_score = 0.25 WHERE thread_id = '{world['thread']}' AND content_id = '{world['ci_text']}';
    DELETE FROM content_tags WHERE content_id = '{world['ci_text']}';
    DELETE FROM messages WHERE id = '{world['msg2']}';
    UPDATE content_items SET project_id = (SELECT id FROM projects WHERE id = '{world['project']}') WHERE id = '{world['ci_code']}';
    """)
    wait_until(lambda: nx.cypher_value("MATCH (c:ContentItem {id: $id}) RETURN c.title", {"id": world["ci_text"]}) == "Doc v2",
               90, what="title update")
    wait_until(lambda: nx.cypher_value("MATCH (m:Message {id: $id}) RETURN count(m)", {"id": world["msg2"]}) == 0,
               90, what="message delete")
    # the delete of msg2 cascades to its links: REPLIED_WITH and USED_CONTEXT go with the node
    assert rel_count(nx, "(:Message {id: $a})-[:REPLIED_WITH]->()", {"a": world["msg"], "b": None}) == 0
    wait_until(lambda: rel_count(nx, "(:ContentItem {id: $a})-[:TAGGED_WITH]->(:Tag {id: $b})",
                                 {"a": world["ci_text"], "b": world["tag"]}) == 0, 90, what="tag link delete")
    # INCLUDES: the old version is closed, the current one carries the new score
    wait_until(lambda: rel_count(nx, "(:Thread {id: $a})-[:INCLUDES]->(:ContentItem {id: $b})",
                                 {"a": world["thread"], "b": world["ci_text"]}) == 2, 90, what="INCLUDES v2")
    cur = nx.cypher("MATCH (:Thread {id: $a})-[r:INCLUDES]->(:ContentItem {id: $b}) WHERE r.validTo IS NULL "
                    "RETURN r.relevanceScore AS s", {"a": world["thread"], "b": world["ci_text"]})
    assert [r["s"] for r in cur] == [0.25]
    props = node(nx, "ContentItem", world["ci_text"])
    assert "description" not in props
    # a message deleted in PostgreSQL leaves no dangling node, and no tombstone is visible as a Message
    assert nx.cypher_value("MATCH (n:NexusTombstone {key: $k}) RETURN count(n)", {"k": f"Message/{world['msg2']}"}) == 1
