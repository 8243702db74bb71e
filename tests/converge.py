"""Is the graph in Neo4j what PostgreSQL says it should be? The end check of
the fault tests (tests/test_chaos.py) and the memory tests.

assert_converged(nx) compares, for every captured table of
schemas/mapping.cfg:
  - node tables: the key sets (missing and extra nodes) and every property
    of a plainly comparable type (text, enum, uuid, int, bool, float,
    numeric, text_array), and each parent relationship (missing, extra,
    duplicated);
  - link tables: the (from, to) pairs, duplicates and the same properties;
    a temporal type (INCLUDES) compares its current version only
    (validTo IS NULL).
When bin/nexus-verify exists it is used instead (exit 0 = no divergence,
1 = divergence, 2 = error), so the lead can switch to the tool after the
merge; NEXUS_CONVERGE_OWN=1 forces the comparison here.

Standard library only; the mapping is read with a small libconfig reader.
"""
import base64
import json
import os
import re
import subprocess
import time
import urllib.request

from nexus import ROOT

MAPPING = os.path.join(ROOT, "schemas", "mapping.cfg")
VERIFY = os.path.join(ROOT, "bin", "nexus-verify")
COMPARABLE = {"text", "enum", "uuid", "int", "bool", "float", "numeric", "text_array"}


# --- a libconfig reader (the subset mapping.cfg uses) -------------------------

_TOKEN = re.compile(r'\s+|#[^\n]*|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|[-+]?\d+\.\d*|[-+]?\d+|'
                    r'[A-Za-z_][A-Za-z0-9_.-]*|[=:;,{}()\[\]]', re.S)


def _tokens(text):
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"mapping: cannot read at {text[pos:pos + 30]!r}")
        tok = m.group(0)
        pos = m.end()
        if tok.isspace() or tok.startswith(("#", "//", "/*")):
            continue
        out.append(tok)
    return out


def _value(toks, i):
    t = toks[i]
    if t == "{":
        return _group(toks, i + 1, "}")
    if t in "([":
        items, i = [], i + 1
        close = ")" if t == "(" else "]"
        while toks[i] != close:
            v, i = _value(toks, i)
            items.append(v)
            if toks[i] == ",":
                i += 1
        return items, i + 1
    if t.startswith('"'):
        s = json.loads(t)
        while toks[i + 1].startswith('"'):  # adjacent strings concatenate
            i += 1
            s += json.loads(toks[i])
        return s, i + 1
    if t in ("true", "false"):
        return t == "true", i + 1
    return (float(t) if "." in t else int(t)), i + 1


def _group(toks, i, close):
    out = {}
    while i < len(toks) and toks[i] != close:
        name = toks[i]
        assert toks[i + 1] in "=:", f"mapping: expected = after {name}"
        out[name], i = _value(toks, i + 2)
        if i < len(toks) and toks[i] in ";,":
            i += 1
    return out, i + 1


def load_mapping(path=MAPPING):
    """The mapping as dicts: {'tables': [...], ...}."""
    with open(path) as f:
        doc, _ = _group(_tokens(f.read()), 0, None)
    return doc


def captured_tables(mapping=None):
    m = mapping or load_mapping()
    return [t for t in m["tables"] if t.get("capture", True) and ("node" in t or "relationship" in t)]


# --- the comparison -------------------------------------------------------------

class _Batch:
    """Queries gathered first, then run in one psql call and one Neo4j
    request: a round trip per table would take longer than the check."""

    def __init__(self):
        self.sql, self.cypher = [], []

    def pg(self, select_json):
        """select_json: a SELECT of one json column; returns a slot."""
        self.sql.append(select_json)
        return ("pg", len(self.sql) - 1)

    def neo(self, statement):
        self.cypher.append(statement)
        return ("neo", len(self.cypher) - 1)

    def run(self, nx):
        pg = [[] for _ in self.sql]
        text = "".join(f"SELECT '{i}' || chr(9) || q.j FROM ({q}) AS q(j);\n" for i, q in enumerate(self.sql))
        for line in nx.psql(text).splitlines():
            if line.strip():
                i, j = line.split("\t", 1)
                pg[int(i)].append(json.loads(j))
        body = json.dumps({"statements": [{"statement": c} for c in self.cypher]}).encode()
        req = urllib.request.Request(
            nx.env["NEXUS_NEO4J_URL"].rstrip("/") + "/db/neo4j/tx/commit", data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "Authorization": "Basic " + base64.b64encode(
                         f'{nx.env["NEXUS_NEO4J_USER"]}:{nx.env["NEXUS_NEO4J_PASSWORD"]}'.encode()).decode()})
        with urllib.request.urlopen(req, timeout=600) as resp:
            doc = json.load(resp)
        if doc.get("errors"):
            raise AssertionError(f"cypher failed: {doc['errors']}")
        neo = [[d["row"] for d in res["data"]] for res in doc["results"]]
        self.results = {"pg": pg, "neo": neo}

    def get(self, slot):
        return self.results[slot[0]][slot[1]]


def _norm(v, typ):
    if v is None:
        return None
    if typ in ("float", "numeric"):
        return round(float(v), 6)
    if typ == "uuid":
        return str(v).lower()
    if typ == "text_array":
        return list(v)
    return v


def _props(t):
    out = []
    for p in t.get("properties", []):
        if p[2] in COMPARABLE:
            out.append((p[0], p[1], p[2]))
    return out


def _compare(what, pg, neo, report, limit=5):
    """pg, neo: dict key -> property values. Adds problems to report."""
    missing = [k for k in pg if k not in neo]
    extra = [k for k in neo if k not in pg]
    differ = [k for k in pg if k in neo and neo[k] != pg[k]]
    if missing:
        report.append(f"{what}: {len(missing)} missing in Neo4j, e.g. {missing[:limit]}")
    if extra:
        report.append(f"{what}: {len(extra)} extra in Neo4j, e.g. {extra[:limit]}")
    if differ:
        ex = [(k, pg[k], neo[k]) for k in differ[:limit]]
        report.append(f"{what}: {len(differ)} differ, e.g. (key, PostgreSQL, Neo4j) {ex}")
    return len(missing) + len(extra) + len(differ)


def _pg_cols(cols, props):
    return ", ".join(cols + [f"{c}::text" if typ in ("uuid", "enum") else c for c, _, typ in props])


def _keyed(rows, nkey, props, report, what):
    """rows of [key..., value...] -> {key: [values]}; counts duplicates."""
    out, dup = {}, 0
    for row in rows:
        k = row[0] if nkey == 1 else tuple(row[:nkey])
        if k in out:
            dup += 1
        out[k] = [_norm(v, typ) for v, (_, _, typ) in zip(row[nkey:], props)]
    if dup:
        report.append(f"{what}: {dup} duplicated in Neo4j")
    return out, dup


def _plan(batch, tables):
    """Queue every query; returns the comparisons to make afterwards."""
    plan = []
    for t in captured_tables():
        if tables and t["table"] not in tables:
            continue
        props = _props(t)
        if "node" in t:
            n = t["node"]
            label, kcol, kprop = n["label"], n["key_column"], n["key_property"]
            ret = ", ".join([f"n.{kprop}"] + [f"n.{p}" for _, p, _ in props])
            plan.append((f"{t['table']} (:{label})", 1, props,
                         batch.pg(f"SELECT json_build_array({_pg_cols([kcol + '::text'], props)})::text FROM {t['table']}"),
                         batch.neo(f"MATCH (n:{label}) RETURN [{ret}]")))
            for par in t.get("parents", []):
                pkey = next((x["node"]["key_property"] for x in captured_tables()
                             if "node" in x and x["node"]["label"] == par["label"]), "id")
                plan.append((f"{t['table']} parent (:{par['label']})-[:{par['type']}]->", 2, [],
                             batch.pg(f"SELECT json_build_array({par['column']}::text, {kcol}::text)::text "
                                      f"FROM {t['table']} WHERE {par['column']} IS NOT NULL"),
                             batch.neo(f"MATCH (p:{par['label']})-[:{par['type']}]->(n:{label}) "
                                       f"RETURN [p.{pkey}, n.{kprop}]")))
        else:
            r = t["relationship"]
            a, b = r["from"], r["to"]
            where = " WHERE r.validTo IS NULL" if r.get("temporal") else ""
            ret = ", ".join(["a.id", "b.id"] + [f"r.{p}" for _, p, _ in props])
            plan.append((f"{t['table']} (:{a['label']})-[:{r['type']}]->(:{b['label']})", 2, props,
                         batch.pg(f"SELECT json_build_array({_pg_cols([a['column'] + '::text', b['column'] + '::text'], props)})::text "
                                  f"FROM {t['table']}"),
                         batch.neo(f"MATCH (a:{a['label']})-[r:{r['type']}]->(b:{b['label']}){where} RETURN [{ret}]")))
    return plan


def divergence(nx, tables=None):
    """(count, report lines) of what differs between PostgreSQL and Neo4j,
    by this module's own comparison."""
    batch = _Batch()
    plan = _plan(batch, tables)
    batch.run(nx)
    report, total = [], 0
    for what, nkey, props, pg_slot, neo_slot in plan:
        pg, _ = _keyed(batch.get(pg_slot), nkey, props, [], what)
        neo, dup = _keyed([r[0] for r in batch.get(neo_slot)], nkey, props, report, what)
        total += dup + _compare(what, pg, neo, report)
    return total, report


def verify_tool(nx, tables=None):
    """(exit code, output) of bin/nexus-verify --json, or None when the tool
    is not built (or NEXUS_CONVERGE_OWN is set)."""
    if os.environ.get("NEXUS_CONVERGE_OWN") or not os.access(VERIFY, os.X_OK):
        return None
    args = [VERIFY, "--json", "--dry-run"]
    for t in tables or []:
        args += ["--table", t]
    p = subprocess.run(args, env=nx.worker_env(), capture_output=True, text=True, timeout=900)
    return p.returncode, (p.stdout + p.stderr)[-6000:]


def check(nx, tables=None):
    """(converged?, description)."""
    res = verify_tool(nx, tables)
    if res is not None:
        rc, out = res
        if rc == 2:
            raise AssertionError(f"nexus-verify failed (exit 2):\n{out}")
        return rc == 0, f"nexus-verify exit {rc}:\n{out}"
    n, report = divergence(nx, tables)
    return n == 0, f"{n} divergent items:\n" + "\n".join(report)


def assert_converged(nx, tables=None, timeout=0.0, interval=2.0):
    """Fail unless PostgreSQL and Neo4j agree on every captured table (or
    those named), waiting up to timeout seconds for them to. Returns the
    seconds it took."""
    t0 = time.time()
    first = None
    while True:
        ok, desc = check(nx, tables)
        if ok:
            if first:
                print(f"converge: agreed after {time.time() - t0:.1f}s; first check said {first[:1500]}")
            return time.time() - t0
        first = first or desc
        if time.time() - t0 >= timeout:
            raise AssertionError(f"PostgreSQL and Neo4j diverge after {timeout:.0f}s: {desc}")
        time.sleep(interval)


# --- the rows of some tenants -----------------------------------------------------

# How each captured table reaches its tenant, for "every changed row was
# applied": sync_status of the rows a test wrote.
TENANT_SCOPE = {
    "tenants": "id IN ({t})",
    "users": "tenant_id IN ({t})", "programs": "tenant_id IN ({t})",
    "projects": "tenant_id IN ({t})", "threads": "tenant_id IN ({t})",
    "content_items": "tenant_id IN ({t})", "tags": "tenant_id IN ({t})",
    "messages": "tenant_id IN ({t})",
    "project_memberships": "project_id IN (SELECT id FROM projects WHERE tenant_id IN ({t}))",
    "thread_relationships": "parent_thread_id IN (SELECT id FROM threads WHERE tenant_id IN ({t}))",
    "thread_content": "thread_id IN (SELECT id FROM threads WHERE tenant_id IN ({t}))",
    "text_content": "content_id IN (SELECT id FROM content_items WHERE tenant_id IN ({t}))",
    "code_content": "content_id IN (SELECT id FROM content_items WHERE tenant_id IN ({t}))",
    "content_chunks": "content_id IN (SELECT id FROM content_items WHERE tenant_id IN ({t}))",
    "content_tags": "tag_id IN (SELECT id FROM tags WHERE tenant_id IN ({t}))",
    "message_relationships": "source_message_id IN (SELECT id FROM messages WHERE tenant_id IN ({t}))",
    "message_context_items": "message_id IN (SELECT id FROM messages WHERE tenant_id IN ({t}))",
}


def scope_rows(nx, tenants):
    """{table: number of rows} of the tenants' rows."""
    t = ", ".join(f"'{x}'" for x in tenants)
    return {table: int(nx.scalar(f"SELECT count(*) FROM {table} WHERE {cond.format(t=t)}"))
            for table, cond in TENANT_SCOPE.items()}


def unsynced(nx, tenants):
    """{table: rows not marked SUCCESS} among the tenants' rows; empty when
    every row a test changed was applied and written back."""
    t = ", ".join(f"'{x}'" for x in tenants)
    out = {}
    for table, cond in TENANT_SCOPE.items():
        n = int(nx.scalar(f"SELECT count(*) FROM {table} WHERE {cond.format(t=t)} "
                          f"AND sync_status <> 'SUCCESS'"))
        if n:
            out[table] = n
    return out
