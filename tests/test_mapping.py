"""The mapping covers every row of seed 004, and bad mapping or worker
configuration files are rejected with file:line and a reason."""
import os
import subprocess

import pytest

from nexus import ROOT  # noqa: E402 (the one definition)
SCHEMA = os.path.join(ROOT, "bin", "nexus-schema")

# Seed 004's table: PostgreSQL table -> node label or relationship pattern.
SEED_004 = {
    "tenants": "node Tenant",
    "users": "node User (:Tenant)-[:HAS_USER]->(:User)",
    "programs": "node Program (:Tenant)-[:HAS_PROGRAM]->(:Program)",
    "projects": "node Project (:Program)-[:HAS_PROJECT]->(:Project)",
    "project_memberships": "relationship (:Project)-[:HAS_MEMBER]->(:User)",
    "threads": "node Thread (:Project)-[:HAS_THREAD]->(:Thread)",
    "thread_relationships": "relationship (:Thread)-[:PARENT_OF]->(:Thread)",
    "content_items": "node ContentItem (:Project)-[:HAS_CONTENT]->(:ContentItem)",
    "text_content": "node Text (:ContentItem)-[:HAS_CONTENT]->(:Text)",
    "code_content": "node Code (:ContentItem)-[:HAS_CONTENT]->(:Code)",
    "content_chunks": "node ContentChunk (:ContentItem)-[:HAS_CHUNK]->(:ContentChunk)",
    "tags": "node Tag (:Project)-[:HAS_TAG]->(:Tag)",
    "content_tags": "relationship (:ContentItem)-[:TAGGED_WITH]->(:Tag)",
    "thread_content": "relationship (:Thread)-[:INCLUDES]->(:ContentItem) temporal",
    "messages": "node Message (:Thread)-[:CONTAINS_MESSAGE]->(:Message)",
    "message_relationships": "relationship (:Message)-[:REPLIED_WITH]->(:Message)",
    "message_context_items": "relationship (:Message)-[:USED_CONTEXT]->(:ContentItem)",
    "knowledge_graph_configurations": "none -",
}


def run(*args, **kw):
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, **kw)


def describe():
    out = run(SCHEMA, "describe").stdout
    res = {}
    for line in out.splitlines():
        table, rest = line.split(" ", 1)
        res[table] = rest
    return res


@pytest.mark.parametrize("table", sorted(SEED_004))
def test_every_seed_row_is_mapped(table):
    got = describe()
    assert table in got, f"{table} missing from schemas/mapping.cfg"
    assert got[table].startswith(SEED_004[table] + " lane="), got[table]


def test_every_table_owned_by_exactly_one_worker():
    got = describe()
    for table, rest in got.items():
        workers = [p for p in rest.split() if p.startswith("worker=")]
        assert len(workers) == 1
    assert set(got) == set(SEED_004)


def test_worker_binaries_exist_for_every_worker():
    for w in run(SCHEMA, "workers").stdout.split():
        exe = os.path.join(ROOT, "bin", f"{w}_worker")
        assert os.access(exe, os.X_OK), exe
        p = run(exe, "--version")
        assert p.returncode == 0 and p.stdout.startswith(f"{w}_worker ")
        p = run(exe, "--help")
        assert p.returncode == 0 and "--config" in p.stdout


def test_ddl_has_every_mapped_table():
    ddl = open(os.path.join(ROOT, "schemas", "contextnexus.sql")).read()
    for table in SEED_004:
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in ddl


def test_connector_routes_every_captured_table_to_its_lane_topic():
    import json
    cfg = json.loads(run(SCHEMA, "connector-json").stdout)
    routes = [k[:-len(".regex")] for k in cfg if k.endswith(".regex")]
    got = describe()
    for table, rest in got.items():
        if rest.startswith("none"):
            assert f"public.{table}" not in cfg["table.include.list"].split(",")
            continue
        lane = rest.split("lane=")[1].split()[0]
        worker = rest.split("worker=")[1].split()[0]
        hits = [r for r in routes if f"|{table}|" in "|" + cfg[r + ".regex"].split("(")[1].rstrip(")") + "|"]
        assert len(hits) == 1, table
        assert cfg[hits[0] + ".replacement"] == f"nexus.{lane}.{worker}"


BAD_MAPPINGS = [
    ("tables = ( { table = \"t\"; worker = \"w\"; lane = \"urgent\"; key = [\"id\"]; } );", "unknown lane"),
    ("tables = ( { table = \"t; DROP\"; worker = \"w\"; lane = \"low\"; key = [\"id\"]; } );", "not a plain identifier"),
    ("tables = ( { table = \"t\"; worker = \"w\"; lane = \"low\"; key = [\"id\"]; node = { label = \"A`B\"; key_column = \"id\"; key_property = \"id\"; }; } );", "not a plain identifier"),
    ("tables = ( { table = \"t\"; worker = \"w\"; lane = \"low\"; key = [\"id\"]; node = { label = \"A\"; key_column = \"id\"; key_property = \"id\"; }; properties = ( [\"a\", \"b\", \"money\"] ); } );", "unknown column type"),
    ("tables = ( { table = \"t\"; worker = \"w\"; lane = \"low\"; key = [\"id\"]; } ", "syntax error"),
]


@pytest.mark.parametrize("body,reason", BAD_MAPPINGS, ids=[b[1] for b in BAD_MAPPINGS])
def test_bad_mapping_is_rejected_with_file_and_line(tmp_path, body, reason):
    path = tmp_path / "bad.cfg"
    path.write_text('topic_prefix = "x";\ndlq_topic = "x.dlq";\npg_schema = "public";\n'
                    'sync = { version = "v"; status = "s"; attempts = "a"; error = "e"; timestamp = "t"; };\n'
                    + body + "\n")
    p = run(SCHEMA, "--mapping", str(path), "topics")
    assert p.returncode != 0
    assert f"{path}:" in p.stderr and reason in p.stderr, p.stderr


def test_worker_config_error_names_file_and_line_before_connecting(tmp_path):
    path = tmp_path / "w.cfg"
    path.write_text('mapping = "schemas/mapping.cfg";\nlog = { level = "loud"; };\n')
    p = run(os.path.join(ROOT, "bin", "thread_worker"), "--config", str(path), timeout=10)
    assert p.returncode == 2
    assert f"{path}:2: unknown log level" in p.stderr, p.stderr


def test_dump_config_masks_secrets(tmp_path):
    env = dict(os.environ, NEXUS_NEO4J_PASSWORD="s3cret-neo", NEXUS_WRITER_PASSWORD="s3cret-pg",
               NEXUS_BATCH_MAX="77")
    p = run(os.path.join(ROOT, "bin", "message_worker"), "--config",
            os.path.join(ROOT, "deploy", "worker.cfg"), "--dump-config", env=env, timeout=10)
    assert p.returncode == 0, p.stderr
    assert "s3cret" not in p.stdout
    assert "max_events = 77" in p.stdout
    assert 'lanes = ["high", "normal", "low"]' in p.stdout
