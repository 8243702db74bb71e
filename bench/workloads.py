"""Deterministic workloads for bench/run, as SQL for psql.

Every id is md5(salt:kind:index)::uuid, so a workload is the same sequence
of changes for the same seed and scale; the salt (one per benchmark run)
only keeps the rows of two runs apart in one database. Each workload has
its own tenant, so PostgreSQL counts can be scoped to it.

  W1 insert-only: content_items rows, 1000 per transaction.
  W2 mixed: 60% updates on hot keys, 30% inserts, 10% deletes, spread over
     every mapped table (nodes and link rows), 10 statements of 50 rows
     per transaction.
  W3 relationship-heavy: inserts, updates (new INCLUDES versions) and
     deletes of thread_content, content_tags and message_context_items.

base() returns the rows the changes need (loaded and captured before the
measured range), fill() the measured changes. Standard library only.
"""
import hashlib
import random
import uuid

PROJECTS = 4
USERS = 20
STEP = 50          # rows per statement in W2/W3
STEPS_PER_TX = 10


def bid(salt, kind, i):
    """The uuid PostgreSQL's pg_temp.b(kind, i) gives for this salt."""
    return str(uuid.UUID(hashlib.md5(f"{salt}:{kind}:{i}".encode()).hexdigest()))


def prelude(salt):
    """Session setup: the id function pg_temp.b(kind, index)."""
    assert all(c in "0123456789abcdef" for c in salt)
    return (f"SET client_min_messages = warning;\n"
            f"CREATE FUNCTION pg_temp.b(k text, i bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS\n"
            f"$$ SELECT md5('{salt}:' || k || ':' || i)::uuid $$;\n")


def arr(ids):
    return "ARRAY[" + ",".join(str(int(i)) for i in ids) + "]::bigint[]"


class Sizes:
    """Base population for a workload of n changes."""

    def __init__(self, n, heavy_links=False):
        self.th = max(8, n // 100)
        self.ci = max(40, n // 10)
        self.msg = max(40, n // 10)
        self.tag = max(8, n // 200)
        # protected: never deleted, so link endpoints always exist
        self.ci_p, self.msg_p, self.th_p = self.ci // 2, self.msg // 2, self.th
        # hot: the updated keys (a tenth of the protected ones)
        self.ci_h, self.msg_h = max(4, self.ci_p // 10), max(4, self.msg_p // 10)
        self.th_h, self.tag_h = max(2, self.th // 10), max(2, self.tag // 10)
        self.links = 0 if heavy_links else self.ci_p  # base rows per link table


def tenant_sql(w):
    t = f"pg_temp.b('tenant', {w})"
    return (f"INSERT INTO tenants (id, name, slug) VALUES ({t}, 'bench {w}', 'bench-' || {t}::text);\n"
            f"INSERT INTO programs (id, tenant_id, name) VALUES (pg_temp.b('program', {w}), {t}, 'bench');\n"
            f"INSERT INTO projects (id, program_id, tenant_id, name) SELECT pg_temp.b('project', i), "
            f"pg_temp.b('program', {w}), {t}, 'bench ' || i FROM generate_series(0, {PROJECTS - 1}) i;\n"
            f"INSERT INTO users (id, tenant_id, email, display_name) SELECT pg_temp.b('user', i), {t}, "
            f"'bench' || i || '@example.org', 'Bench ' || i FROM generate_series(0, {USERS - 1}) i;\n"
            f"INSERT INTO project_memberships (project_id, user_id) SELECT pg_temp.b('project', i % {PROJECTS}), "
            f"pg_temp.b('user', i) FROM generate_series(0, {USERS - 1}) i;\n")


# --- row builders: SQL for a list of indices ---------------------------------

def ins_content_items(w, ids, stamp=False):
    """stamp: created_at is clock_timestamp() (the latency writer)."""
    return (f"INSERT INTO content_items (id, tenant_id, project_id, created_by, content_type, title, description, "
            f"storage_key, token_count, metadata{', created_at' if stamp else ''}) SELECT pg_temp.b('ci', i), pg_temp.b('tenant', {w}), "
            f"pg_temp.b('project', i % {PROJECTS}), pg_temp.b('user', i % {USERS}), 'text', 'Item ' || i, "
            f"'bench item ' || i, 'bench/' || i, i % 4000, jsonb_build_object('n', i)"
            f"{', clock_timestamp()' if stamp else ''} FROM unnest({arr(ids)}) i;\n")


def ins_text(ids):
    return (f"INSERT INTO text_content (content_id, body, word_count) SELECT pg_temp.b('ci', i), "
            f"'body of item ' || i, 4 FROM unnest({arr(ids)}) i;\n")


def ins_chunks(ids, ci_p):
    return (f"INSERT INTO content_chunks (id, content_id, chunk_index, chunk_text, token_count, keywords) "
            f"SELECT pg_temp.b('chunk', i), pg_temp.b('ci', i % {ci_p}), 1000 + i, 'chunk ' || i, 2, "
            f"ARRAY['bench', 'chunk'] FROM unnest({arr(ids)}) i;\n")


def ins_threads(w, ids):
    return (f"INSERT INTO threads (id, project_id, tenant_id, created_by, title) SELECT pg_temp.b('th', i), "
            f"pg_temp.b('project', i % {PROJECTS}), pg_temp.b('tenant', {w}), pg_temp.b('user', i % {USERS}), "
            f"'Thread ' || i FROM unnest({arr(ids)}) i;\n")


def ins_messages(w, ids, th):
    return (f"INSERT INTO messages (id, thread_id, tenant_id, user_id, role, body, token_count) "
            f"SELECT pg_temp.b('msg', i), pg_temp.b('th', i % {th}), pg_temp.b('tenant', {w}), "
            f"pg_temp.b('user', i % {USERS}), 'user', 'message ' || i, 3 FROM unnest({arr(ids)}) i;\n")


def ins_tags(w, ids):
    return (f"INSERT INTO tags (id, project_id, tenant_id, name, color) SELECT pg_temp.b('tag', i), "
            f"pg_temp.b('project', i % {PROJECTS}), pg_temp.b('tenant', {w}), 'tag-' || i, 'blue' "
            f"FROM unnest({arr(ids)}) i;\n")


# Link rows: index q -> a pair of protected endpoints, one-to-one while
# q / n_from < n_to; a pair that exists already is skipped (ON CONFLICT).
def link_pair(table, s):
    if table == "content_tags":
        return ("content_id", "tag_id", f"pg_temp.b('ci', q % {s.ci_p})",
                f"pg_temp.b('tag', (q % {s.ci_p} + q / {s.ci_p}) % {s.tag})")
    if table == "thread_content":
        return ("thread_id", "content_id", f"pg_temp.b('th', (q % {s.ci_p} + q / {s.ci_p}) % {s.th_p})",
                f"pg_temp.b('ci', q % {s.ci_p})")
    if table == "message_context_items":
        return ("message_id", "content_id", f"pg_temp.b('msg', q % {s.msg_p})",
                f"pg_temp.b('ci', (q % {s.msg_p} + q / {s.msg_p}) % {s.ci_p})")
    if table == "message_relationships":
        return ("source_message_id", "target_message_id", f"pg_temp.b('msg', q % {s.msg_p})",
                f"pg_temp.b('msg', (q % {s.msg_p} + 1 + q / {s.msg_p}) % {s.msg_p})")
    if table == "thread_relationships":
        return ("parent_thread_id", "child_thread_id", f"pg_temp.b('th', q % {s.th_p})",
                f"pg_temp.b('th', (q % {s.th_p} + 1 + q / {s.th_p}) % {s.th_p})")
    raise ValueError(table)


LINK_EXTRA = {
    "content_tags": ("tagged_by", "pg_temp.b('user', q % 20)"),
    "thread_content": ("relevance_score", "((q % 1000) / 1000.0)::numeric(5,4)"),
    "message_context_items": ("relevance_score", "((q % 997) / 1000.0)::numeric(5,4)"),
    "message_relationships": ("relationship_type", "'reply'"),
    "thread_relationships": ("relationship_type", "'branch'"),
}


def ins_links(table, ids, s):
    ca, cb, ea, eb = link_pair(table, s)
    col, val = LINK_EXTRA[table]
    return (f"INSERT INTO {table} ({ca}, {cb}, {col}) SELECT {ea}, {eb}, {val} FROM unnest({arr(ids)}) q "
            f"ON CONFLICT DO NOTHING;\n")


def upd_links(table, ids, s, rev):
    ca, cb, ea, eb = link_pair(table, s)
    sets = {
        "content_tags": "tagged_by = pg_temp.b('user', (q + {r}) % 20)",
        "thread_content": "relevance_score = (((q + {r}) % 1000) / 1000.0)::numeric(5,4), position = position + 1",
        "message_context_items": "relevance_score = (((q + {r}) % 997) / 1000.0)::numeric(5,4)",
        "message_relationships": "relationship_type = 'rev{r}'",
        "thread_relationships": "relationship_type = 'rev{r}'",
    }[table].format(r=rev)
    return (f"UPDATE {table} t SET {sets} FROM unnest({arr(ids)}) q "
            f"WHERE t.{ca} = {ea} AND t.{cb} = {eb};\n")


def del_links(table, ids, s):
    ca, cb, ea, eb = link_pair(table, s)
    return (f"DELETE FROM {table} t USING unnest({arr(ids)}) q WHERE t.{ca} = {ea} AND t.{cb} = {eb};\n")


NODE_UPDATES = {
    "content_items": ("ci", "title = 'Item ' || i || ' rev {r}', token_count = token_count + 1, updated_at = now()",
                      "id"),
    "text_content": ("ci", "body = 'body ' || i || ' rev {r}', word_count = word_count + 1", "content_id"),
    "messages": ("msg", "body = 'message ' || i || ' rev {r}', token_count = token_count + 1", "id"),
    "threads": ("th", "title = 'Thread ' || i || ' rev {r}', updated_at = now()", "id"),
    "tags": ("tag", "color = CASE WHEN color = 'red' THEN 'green' ELSE 'red' END", "id"),
    "users": ("user", "last_login_at = now()::timestamp, is_active = NOT is_active", "id"),
    "projects": ("project", "description = 'rev {r}', budget = 1000 + {r}", "id"),
}


def upd_nodes(table, ids, rev):
    kind, sets, key = NODE_UPDATES[table]
    return (f"UPDATE {table} SET {sets.format(r=rev)} FROM unnest({arr(ids)}) i "
            f"WHERE {key} = pg_temp.b('{kind}', i);\n")


def del_nodes(table, kind, key, ids):
    return f"DELETE FROM {table} WHERE {key} IN (SELECT pg_temp.b('{kind}', i) FROM unnest({arr(ids)}) i);\n"


# --- workloads --------------------------------------------------------------

def chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def base(workload, w, n):
    """SQL for the rows the workload's changes need."""
    out = [tenant_sql(w)]
    if workload == "W1":
        return "".join(out)
    s = Sizes(n, heavy_links=(workload == "W3"))
    out.append(ins_threads(w, range(s.th)))
    for part in chunks(range(s.ci), 1000):
        out.append(ins_content_items(w, part))
        out.append(ins_text(list(part)))
    out.append(ins_tags(w, range(s.tag)))
    for part in chunks(range(s.msg), 1000):
        out.append(ins_messages(w, part, s.th))
    if workload == "W2":
        for part in chunks(range(s.ci_p), 1000):
            out.append(ins_chunks(part, s.ci_p))
        for table in LINK_EXTRA:
            for part in chunks(range(s.links), 1000):
                out.append(ins_links(table, part, s))
    return "".join(out)


def fill(workload, w, n, seed):
    """SQL for the n measured changes (planned rows; cascades add events,
    ON CONFLICT skips remove some)."""
    if workload == "W1":
        out = []
        for part in chunks(range(n), 1000):
            out.append("BEGIN;\n" + ins_content_items(w, part) + "COMMIT;\n")
        return "".join(out)
    rng = random.Random(f"{seed}:{workload}")
    s = Sizes(n, heavy_links=(workload == "W3"))
    steps = max(1, n // STEP)
    nxt = {"ci": s.ci, "msg": s.msg, "th": s.th, "tag": s.tag, "chunk": s.ci_p,
           **{t: s.links for t in LINK_EXTRA}}
    # cold rows that may be deleted: unprotected base rows, then new ones
    cold = {"ci": list(range(s.ci_p, s.ci)), "msg": list(range(s.msg_p, s.msg)),
            "chunk": list(range(s.ci_p)), **{t: list(range(s.links)) for t in LINK_EXTRA}}
    hot_links = {t: max(2, s.links // 10) for t in LINK_EXTRA}
    stmts = []
    for k in range(steps):
        r = rng.random()
        if workload == "W2":
            if r < 0.6:
                table = rng.choice(list(NODE_UPDATES) + ["thread_content", "message_context_items", "content_tags"])
                if table in LINK_EXTRA:
                    ids = rng.sample(range(hot_links[table]), min(STEP, hot_links[table]))
                    stmts.append(upd_links(table, ids, s, k))
                else:
                    hot = {"content_items": s.ci_h, "text_content": s.ci_h, "messages": s.msg_h,
                           "threads": s.th_h, "tags": s.tag_h, "users": USERS, "projects": PROJECTS}[table]
                    ids = rng.sample(range(hot), min(STEP, hot))
                    stmts.append(upd_nodes(table, ids, k))
            elif r < 0.9:
                table = rng.choice(["content_items", "messages", "content_chunks", "tags", "threads"]
                                   + list(LINK_EXTRA))
                if table in LINK_EXTRA:
                    ids = list(range(nxt[table], nxt[table] + STEP))
                    nxt[table] += STEP
                    stmts.append(ins_links(table, ids, s))
                    cold[table] += ids
                    continue
                kind = {"content_items": "ci", "messages": "msg", "content_chunks": "chunk",
                        "tags": "tag", "threads": "th"}[table]
                ids = list(range(nxt[kind], nxt[kind] + STEP))
                nxt[kind] += STEP
                if kind == "ci":
                    stmts.append(ins_content_items(w, ids) + ins_text(ids))
                elif kind == "msg":
                    stmts.append(ins_messages(w, ids, s.th))
                elif kind == "chunk":
                    stmts.append(ins_chunks(ids, s.ci_p))
                elif kind == "tag":
                    stmts.append(ins_tags(w, ids))
                else:
                    stmts.append(ins_threads(w, ids))
                if kind in cold:
                    cold[kind] += ids
            else:
                kind = rng.choice(["ci", "msg", "chunk", "content_tags", "thread_content",
                                   "message_context_items", "message_relationships", "thread_relationships"])
                pool = cold[kind]
                if not pool:
                    continue
                take = [pool.pop(rng.randrange(len(pool))) for _ in range(min(STEP, len(pool)))]
                if kind in LINK_EXTRA:
                    stmts.append(del_links(kind, take, s))
                else:
                    table, key = {"ci": ("content_items", "id"), "msg": ("messages", "id"),
                                  "chunk": ("content_chunks", "id")}[kind]
                    stmts.append(del_nodes(table, kind, key, take))
        else:  # W3
            table = rng.choice(["thread_content", "content_tags", "message_context_items"])
            if r < 0.7:
                ids = list(range(nxt[table], nxt[table] + STEP))
                nxt[table] += STEP
                stmts.append(ins_links(table, ids, s))
                cold[table] += ids
            elif r < 0.9 and nxt[table] > s.links:
                made = nxt[table]
                ids = rng.sample(range(made), min(STEP, made))
                stmts.append(upd_links(table, ids, s, k))
            elif cold[table]:
                pool = cold[table]
                take = [pool.pop(rng.randrange(len(pool))) for _ in range(min(STEP, len(pool)))]
                stmts.append(del_links(table, take, s))
    out = []
    for part in chunks(stmts, STEPS_PER_TX):
        out.append("BEGIN;\n" + "".join(part) + "COMMIT;\n")
    return "".join(out)


# PostgreSQL rows of workload w's tenant, per mapped table (current state).
def pg_count_sql(table, w):
    t = f"pg_temp.b('tenant', {w})"
    direct = {"tenants": f"id = {t}"}
    for name in ("users", "programs", "projects", "threads", "content_items", "tags", "messages"):
        direct[name] = f"tenant_id = {t}"
    via = {
        "text_content": ("content_id", "content_items"), "code_content": ("content_id", "content_items"),
        "content_chunks": ("content_id", "content_items"), "content_tags": ("content_id", "content_items"),
        "thread_content": ("thread_id", "threads"), "thread_relationships": ("parent_thread_id", "threads"),
        "message_relationships": ("source_message_id", "messages"),
        "message_context_items": ("message_id", "messages"), "project_memberships": ("project_id", "projects"),
    }
    if table in direct:
        return f"SELECT count(*) FROM {table} WHERE {direct[table]}"
    col, parent = via[table]
    return f"SELECT count(*) FROM {table} WHERE {col} IN (SELECT id FROM {parent} WHERE tenant_id = {t})"
