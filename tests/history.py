"""Random, seeded change histories over every captured table of the mapping,
and a tenant-scoped comparison of PostgreSQL with Neo4j, for the property
test of order independence (tests/test_convergence.py).

A History is a list of SQL statements, each its own transaction, for one
fresh tenant (unique slug): inserts, updates, deletes (with PostgreSQL's
cascades), re-inserts of deleted keys, link churn, parent moves (a content
item to another project, a message to another thread, ...) and key moves
(an UPDATE of a primary key, which Debezium emits as a delete of the old key
and a create of the new one). A small model of the rows keeps every
statement valid under the foreign keys, so the whole history runs without
an error. The same seed gives the same history; its keys are fresh uuids
per run (salted by run_tag), so a seed can be rerun on the same stack.

diverge(nx, tenant, ids) compares, for every captured table, the tenant's
rows in PostgreSQL with the graph elements whose keys the history used:
missing, extra (a deleted node or link that came back, a placeholder node
left behind), duplicated, property values, parent relationships and, for
the temporal INCLUDES, the current version of each pair (exactly one).

Standard library only."""
import json
import random
import re
import uuid

from converge import TENANT_SCOPE, captured_tables

# value types compared property by property (after the normalisation below)
COMPARED = {"text", "enum", "uuid", "int", "bool", "float", "numeric", "text_array", "date", "timestamptz",
            "timestamp", "json"}


def q(v):
    """A SQL literal."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "ARRAY[" + ", ".join(q(x) for x in v) + "]::text[]"
    return "'" + str(v).replace("'", "''") + "'"


class History:
    """One seeded history; .statements is the SQL, .ids every key it used."""

    def __init__(self, seed, ops=120, run_tag=None):
        self.rng = random.Random(seed)
        # the keys come from their own generator, salted per run: a rerun of
        # a seed makes the same history with fresh keys (choices follow the
        # model's insertion order, never the key values)
        self.keys = random.Random(f"{seed}/{run_tag or uuid.uuid4().hex}")
        self.seed = seed
        self.tag = run_tag or f"{seed:x}"
        self.ids = set()
        self.statements = []
        self.counter = 0
        self.counts = {}
        self.tables = {}
        # the model: table -> {key: row dict}
        self.rows = {t: {} for t in TENANT_SCOPE}
        self.dead = {t: [] for t in TENANT_SCOPE}  # deleted keys, for re-inserts
        self._setup()
        for _ in range(ops):
            self._step()
        self._sentinel()

    # --- helpers ------------------------------------------------------------
    def uid(self):
        u = str(uuid.UUID(int=self.keys.getrandbits(128), version=4))
        self.ids.add(u)
        return u

    def n(self):
        self.counter += 1
        return self.counter

    def emit(self, kind, sql):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        words = sql.split()
        table = kind if kind == "sentinel" else words[2] if words[0] in ("INSERT", "DELETE") else words[1]
        self.tables[table] = self.tables.get(table, 0) + 1
        self.statements.append(sql.strip().rstrip(";") + ";\n")

    def pick(self, table, cond=None):
        keys = [k for k, r in self.rows[table].items() if cond is None or cond(k, r)]
        return self.rng.choice(keys) if keys else None

    def insert(self, table, row):
        cols = list(row)
        self.emit("insert", f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                            f"({', '.join(q(row[c]) for c in cols)})")

    def _key(self, table, row):
        if table in LINKS:
            a, b = LINKS[table]
            return (row[a], row[b])
        return row[KEYCOL.get(table, "id")]

    def _where(self, table, key):
        if table in LINKS:
            a, b = LINKS[table]
            return f"{a} = {q(key[0])} AND {b} = {q(key[1])}"
        return f"{KEYCOL.get(table, 'id')} = {q(key)}"

    def add(self, table, row):
        self.rows[table][self._key(table, row)] = row
        self.insert(table, row)

    def forget(self, table, key):
        """Drop a row from the model, with what PostgreSQL cascades."""
        row = self.rows[table].pop(key, None)
        if row is None:
            return
        self.dead[table].append(dict(row))
        for child, col in CASCADE.get(table, ()):
            for k, r in list(self.rows[child].items()):
                if r[col] == key:
                    self.forget(child, k)

    def revive(self, table, chance=0.4):
        """A deleted key of the table to insert again (sometimes), or a new one."""
        dead = list(dict.fromkeys(d[KEYCOL.get(table, "id")] for d in self.dead[table]
                                  if d[KEYCOL.get(table, "id")] not in self.rows[table]))
        if dead and self.rng.random() < chance:
            return self.rng.choice(dead)
        return self.uid()

    def referenced(self, table, key):
        return any(r[col] == key for child, col in CASCADE.get(table, ()) for r in self.rows[child].values())

    # --- the history --------------------------------------------------------
    def _setup(self):
        self.tenant = self.uid()
        self.add("tenants", {"id": self.tenant, "name": "converge", "slug": f"converge-{self.tag}-{self.tenant[:8]}",
                             "plan": "free"})
        for _ in range(2):
            self.add("programs", {"id": self.uid(), "tenant_id": self.tenant, "name": f"prog {self.n()}"})
        for _ in range(2):
            self.add("projects", {"id": self.uid(), "tenant_id": self.tenant,
                                  "program_id": self.pick("programs"), "name": f"proj {self.n()}",
                                  "budget": round(self.rng.uniform(0, 1e5), 2)})
        for _ in range(3):
            self.op_user_insert()
        for _ in range(3):
            self.op_thread_insert()
        for _ in range(4):
            self.op_item_insert()
        for _ in range(2):
            self.op_tag_insert()
        for _ in range(3):
            self.op_message_insert()
        # a row in every captured table from the start
        for table in ("text_content", "code_content"):
            while table not in [t for t in self.rows if self.rows[t]]:
                self.op_body(table)
        self.op_chunk()
        for table, (a_table, b_table, props) in self._link_kinds().items():
            for _ in range(2):
                while self._link(table, a_table, b_table, props, same=a_table == b_table, insert=True) is False:
                    pass

    def _link_kinds(self):
        return {
            "project_memberships": ("projects", "users", lambda: {"role": self.rng.choice(ROLES)}),
            "thread_relationships": ("threads", "threads",
                                     lambda: {"relationship_type": self.rng.choice(["branch", "fork", "ref"])}),
            "thread_content": ("threads", "content_items",
                               lambda: {"position": self.rng.randrange(50),
                                        "relevance_score": round(self.rng.random(), 4)}),
            "content_tags": ("content_items", "tags",
                             lambda: {"created_at": f"2026-01-{self.rng.randrange(1, 28):02d} 10:00:00+00"}),
            "message_relationships": ("messages", "messages",
                                      lambda: {"relationship_type": self.rng.choice(["reply", "quote"])}),
            "message_context_items": ("messages", "content_items",
                                      lambda: {"relevance_score": round(self.rng.random(), 4)}),
        }

    def _step(self):
        ops = [(w, getattr(self, "op_" + name)) for name, w in WEIGHTS]
        total = sum(w for w, _ in ops)
        for _ in range(20):
            x = self.rng.uniform(0, total)
            for w, op in ops:
                x -= w
                if x <= 0:
                    break
            if op() is not False:
                return

    def _sentinel(self):
        """A last transaction that changes a row of each table that still has
        one: when those rows are written back, every lane has delivered the
        history (Debezium emits in WAL order)."""
        parts = [f"UPDATE tenants SET plan = {q('done-' + self.tag)} WHERE id = {q(self.tenant)}"]
        for table, (col, val) in TOUCH.items():
            key = self.pick(table)
            if key is not None:
                parts.append(f"UPDATE {table} SET {col} = {val} WHERE {self._where(table, key)}")
        self.emit("sentinel", "BEGIN;\n" + ";\n".join(parts) + ";\nCOMMIT")

    # node tables
    def op_user_insert(self):
        uid = self.revive("users")
        self.add("users", {"id": uid, "tenant_id": self.tenant, "email": f"u{self.n()}@x.org",
                           "display_name": f"User {self.n()}", "role": self.rng.choice(ROLES),
                           "last_login_at": self.rng.choice([None, f"2026-0{self.rng.randrange(1, 9)}-11 "
                                                                   f"12:{self.rng.randrange(60):02d}:05.25"])})

    def op_user_update(self):
        k = self.pick("users")
        if not k:
            return False
        self.emit("update", f"UPDATE users SET display_name = {q('U ' + str(self.n()))}, role = "
                            f"{q(self.rng.choice(ROLES))}, is_active = {q(self.rng.random() < 0.5)} WHERE id = {q(k)}")

    def op_user_delete(self):
        k = self.pick("users")
        if not k:
            return False
        self.forget("users", k)
        self.emit("delete", f"DELETE FROM users WHERE id = {q(k)}")

    def op_program_update(self):
        k = self.pick("programs")
        self.emit("update", f"UPDATE programs SET description = {q('d' + str(self.n()))} WHERE id = {q(k)}")

    def op_project_update(self):
        k = self.pick("projects")
        self.emit("update", f"UPDATE projects SET budget = {round(self.rng.uniform(0, 1e5), 2)}, start_date = "
                            f"{q(self.rng.choice([None, '2026-03-0' + str(self.rng.randrange(1, 10))]))}, "
                            f"status = {q(self.rng.choice(['active', 'paused', 'done']))} WHERE id = {q(k)}")

    def op_project_move(self):
        k = self.pick("projects")
        cur = self.rows["projects"][k]["program_id"]
        other = self.pick("programs", lambda p, r: p != cur)
        self.rows["projects"][k]["program_id"] = other
        self.emit("parent_move", f"UPDATE projects SET program_id = {q(other)} WHERE id = {q(k)}")

    def op_thread_insert(self):
        tid = self.revive("threads")
        self.add("threads", {"id": tid, "tenant_id": self.tenant, "project_id": self.pick("projects"),
                             "title": f"thread {self.n()}", "status": "open"})

    def op_thread_update(self):
        k = self.pick("threads")
        if not k:
            return False
        self.emit("update", f"UPDATE threads SET title = {q('t' + str(self.n()))}, is_archived = "
                            f"{q(self.rng.random() < 0.3)} WHERE id = {q(k)}")

    def op_thread_move(self):
        k = self.pick("threads")
        if not k:
            return False
        cur = self.rows["threads"][k]["project_id"]
        other = self.pick("projects", lambda p, r: p != cur)
        self.rows["threads"][k]["project_id"] = other
        self.emit("parent_move", f"UPDATE threads SET project_id = {q(other)} WHERE id = {q(k)}")

    def op_thread_delete(self):
        k = self.pick("threads")
        if not k or len(self.rows["threads"]) < 2:
            return False
        self.forget("threads", k)
        self.emit("delete", f"DELETE FROM threads WHERE id = {q(k)}")

    def op_item_insert(self):
        cid = self.revive("content_items")
        self.add("content_items", {"id": cid, "tenant_id": self.tenant, "project_id": self.pick("projects"),
                                   "content_type": self.rng.choice(["text", "code", "document"]),
                                   "title": f"item {self.n()}", "token_count": self.rng.randrange(1000)})

    def op_item_update(self):
        k = self.pick("content_items")
        if not k:
            return False
        self.emit("update", f"UPDATE content_items SET title = {q('i' + str(self.n()))}, metadata = "
                            f"{q(json.dumps({'n': self.n(), 'tags': ['a', 'b'][:self.rng.randrange(3)]}))}, token_count = "
                            f"{self.rng.randrange(1000)}, description = {q(self.rng.choice([None, 'x', 'y']))} "
                            f"WHERE id = {q(k)}")

    def op_item_move(self):
        k = self.pick("content_items")
        if not k:
            return False
        cur = self.rows["content_items"][k]["project_id"]
        other = self.pick("projects", lambda p, r: p != cur)
        self.rows["content_items"][k]["project_id"] = other
        self.emit("parent_move", f"UPDATE content_items SET project_id = {q(other)} WHERE id = {q(k)}")

    def op_item_delete(self):
        k = self.pick("content_items")
        if not k or len(self.rows["content_items"]) < 2:
            return False
        self.forget("content_items", k)
        self.emit("delete", f"DELETE FROM content_items WHERE id = {q(k)}")

    def op_item_rekey(self):
        k = self.pick("content_items", lambda k, r: not self.referenced("content_items", k))
        if not k:
            return False
        new = self.uid()
        row = self.rows["content_items"].pop(k)
        self.dead["content_items"].append(dict(row))
        row["id"] = new
        self.rows["content_items"][new] = row
        self.emit("key_move", f"UPDATE content_items SET id = {q(new)} WHERE id = {q(k)}")

    def op_body(self, table=None):
        """text_content or code_content of an item: insert, update or delete."""
        table = table or self.rng.choice(["text_content", "code_content"])
        other = "code_content" if table == "text_content" else "text_content"
        k = self.pick("content_items")
        if not k or k in self.rows[other]:
            return False
        if k not in self.rows[table]:
            row = {"content_id": k, "body": f"body {self.n()}", "word_count": self.rng.randrange(99)} \
                if table == "text_content" else \
                {"content_id": k, "language": self.rng.choice(["c", "py"]), "source": f"src {self.n()}",
                 "line_count": self.rng.randrange(99)}
            self.add(table, row)
        elif self.rng.random() < 0.6:
            col = "word_count" if table == "text_content" else "line_count"
            self.emit("update", f"UPDATE {table} SET {col} = {self.rng.randrange(999)} WHERE content_id = {q(k)}")
        else:
            self.forget(table, k)
            self.emit("delete", f"DELETE FROM {table} WHERE content_id = {q(k)}")

    def op_chunk(self):
        r = self.rng.random()
        k = self.pick("content_chunks")
        if k is None or r < 0.35:
            item = self.pick("content_items")
            if not item:
                return False
            self.add("content_chunks", {"id": self.uid(), "content_id": item, "chunk_index": self.n(),
                                        "chunk_text": f"chunk {self.n()}", "keywords": [f"k{self.n()}", "x"]})
        elif r < 0.55:
            self.emit("update", f"UPDATE content_chunks SET chunk_text = {q('c' + str(self.n()))}, keywords = "
                                f"ARRAY['k{self.n()}'] WHERE id = {q(k)}")
        elif r < 0.7:
            cur = self.rows["content_chunks"][k]["content_id"]
            other = self.pick("content_items", lambda c, _: c != cur)
            if not other:
                return False
            self.rows["content_chunks"][k]["content_id"] = other
            self.emit("parent_move", f"UPDATE content_chunks SET content_id = {q(other)}, chunk_index = {self.n()} "
                                     f"WHERE id = {q(k)}")
        elif r < 0.85:
            new = self.uid()
            row = self.rows["content_chunks"].pop(k)
            row["id"] = new
            self.rows["content_chunks"][new] = row
            self.emit("key_move", f"UPDATE content_chunks SET id = {q(new)} WHERE id = {q(k)}")
        else:
            self.forget("content_chunks", k)
            self.emit("delete", f"DELETE FROM content_chunks WHERE id = {q(k)}")

    def op_tag_insert(self):
        tid = self.revive("tags")
        self.add("tags", {"id": tid, "tenant_id": self.tenant, "project_id": self.pick("projects"),
                          "name": f"tag {self.n()}", "color": self.rng.choice(["red", "blue", None])})

    def op_tag_change(self):
        k = self.pick("tags")
        if not k:
            return False
        r = self.rng.random()
        if r < 0.4:
            self.emit("update", f"UPDATE tags SET color = {q(self.rng.choice(['red', 'green', None]))} "
                                f"WHERE id = {q(k)}")
        elif r < 0.6:
            cur = self.rows["tags"][k]["project_id"]
            other = self.pick("projects", lambda p, _: p != cur)
            self.rows["tags"][k]["project_id"] = other
            self.emit("parent_move", f"UPDATE tags SET project_id = {q(other)}, name = {q('tag ' + str(self.n()))} "
                                     f"WHERE id = {q(k)}")
        elif r < 0.75 and not self.referenced("tags", k):
            new = self.uid()
            row = self.rows["tags"].pop(k)
            self.dead["tags"].append(dict(row))
            row["id"] = new
            self.rows["tags"][new] = row
            self.emit("key_move", f"UPDATE tags SET id = {q(new)} WHERE id = {q(k)}")
        elif len(self.rows["tags"]) > 1:
            self.forget("tags", k)
            self.emit("delete", f"DELETE FROM tags WHERE id = {q(k)}")
        else:
            return False

    def op_message_insert(self):
        th = self.pick("threads")
        if not th:
            return False
        mid = self.revive("messages")
        self.add("messages", {"id": mid, "tenant_id": self.tenant, "thread_id": th,
                              "role": self.rng.choice(["user", "assistant"]), "body": f"m {self.n()}",
                              "token_count": self.rng.randrange(500)})

    def op_message_change(self):
        k = self.pick("messages")
        if not k:
            return False
        r = self.rng.random()
        if r < 0.4:
            self.emit("update", f"UPDATE messages SET body = {q('m' + str(self.n()))}, model = "
                                f"{q(self.rng.choice([None, 'gpt', 'claude']))} WHERE id = {q(k)}")
        elif r < 0.6:
            cur = self.rows["messages"][k]["thread_id"]
            other = self.pick("threads", lambda t, _: t != cur)
            if not other:
                return False
            self.rows["messages"][k]["thread_id"] = other
            self.emit("parent_move", f"UPDATE messages SET thread_id = {q(other)} WHERE id = {q(k)}")
        elif r < 0.75 and not self.referenced("messages", k):
            new = self.uid()
            row = self.rows["messages"].pop(k)
            self.dead["messages"].append(dict(row))
            row["id"] = new
            self.rows["messages"][new] = row
            self.emit("key_move", f"UPDATE messages SET id = {q(new)} WHERE id = {q(k)}")
        else:
            self.forget("messages", k)
            self.emit("delete", f"DELETE FROM messages WHERE id = {q(k)}")

    # link tables: insert (or re-insert), update, delete, key move
    def _link(self, table, a_table, b_table, props, same=False, insert=False):
        a, b = LINKS[table]
        r = self.rng.random()
        k = self.pick(table)
        if k is None or insert or r < 0.4:
            dead = [d for d in self.dead[table] if (d[a], d[b]) not in self.rows[table]
                    and d[a] in self.rows[a_table] and d[b] in self.rows[b_table]]
            if dead and self.rng.random() < 0.5:
                d = dead[self.rng.randrange(len(dead))]
                x, y = d[a], d[b]
            else:
                x, y = self.pick(a_table), self.pick(b_table)
            if not x or not y or (x, y) in self.rows[table] or (same and x == y):
                return False
            row = {a: x, b: y}
            row.update(props())
            self.add(table, row)
        elif r < 0.65:
            sets = ", ".join(f"{c} = {q(v)}" for c, v in props().items())
            self.emit("update", f"UPDATE {table} SET {sets} WHERE {self._where(table, k)}")
        elif r < 0.8:
            # key move: the pair's second end changes
            y = self.pick(b_table, lambda c, _: (k[0], c) not in self.rows[table] and not (same and c == k[0]))
            if not y:
                return False
            row = self.rows[table].pop(k)
            self.dead[table].append(dict(row))
            row[b] = y
            self.rows[table][(k[0], y)] = row
            self.emit("key_move", f"UPDATE {table} SET {b} = {q(y)} WHERE {self._where(table, k)}")
        else:
            self.forget(table, k)
            self.emit("delete", f"DELETE FROM {table} WHERE {self._where(table, k)}")

    def _link_op(self, table):
        a_table, b_table, props = self._link_kinds()[table]
        return self._link(table, a_table, b_table, props, same=a_table == b_table)

    def op_membership(self):
        return self._link_op("project_memberships")

    def op_thread_rel(self):
        return self._link_op("thread_relationships")

    def op_thread_content(self):
        return self._link_op("thread_content")

    def op_content_tag(self):
        return self._link_op("content_tags")

    def op_message_rel(self):
        return self._link_op("message_relationships")

    def op_context_item(self):
        return self._link_op("message_context_items")

    def op_tenant_update(self):
        self.emit("update", f"UPDATE tenants SET plan = {q(self.rng.choice(['free', 'pro', 'team']))}, settings = "
                            f"{q(json.dumps({'v': self.n(), 'flag': self.rng.random() < 0.5}))} "
                            f"WHERE id = {q(self.tenant)}")


ROLES = ["owner", "admin", "member", "viewer"]
KEYCOL = {"text_content": "content_id", "code_content": "content_id"}
LINKS = {
    "project_memberships": ("project_id", "user_id"),
    "thread_relationships": ("parent_thread_id", "child_thread_id"),
    "thread_content": ("thread_id", "content_id"),
    "content_tags": ("content_id", "tag_id"),
    "message_relationships": ("source_message_id", "target_message_id"),
    "message_context_items": ("message_id", "content_id"),
}
# table -> the tables whose rows PostgreSQL deletes with it (ON DELETE CASCADE), by column
CASCADE = {
    "users": [("project_memberships", "user_id")],
    "threads": [("thread_relationships", "parent_thread_id"), ("thread_relationships", "child_thread_id"),
                ("thread_content", "thread_id"), ("messages", "thread_id")],
    "content_items": [("text_content", "content_id"), ("code_content", "content_id"),
                      ("content_chunks", "content_id"), ("content_tags", "content_id"),
                      ("thread_content", "content_id"), ("message_context_items", "content_id")],
    "tags": [("content_tags", "tag_id")],
    "messages": [("message_relationships", "source_message_id"), ("message_relationships", "target_message_id"),
                 ("message_context_items", "message_id")],
}
# the sentinel's change per table (a mapped column, so the change is an event)
TOUCH = {
    "users": ("display_name", "display_name || '.'"), "projects": ("description", "'sentinel'"),
    "threads": ("status", "'closed'"), "content_items": ("description", "'sentinel'"),
    "content_chunks": ("token_count", "token_count + 1"), "tags": ("color", "'sentinel'"),
    "messages": ("token_count", "token_count + 1"), "project_memberships": ("role", "'viewer'"),
    "thread_relationships": ("relationship_type", "'sentinel'"), "thread_content": ("position", "position + 1"),
    "content_tags": ("created_at", "created_at + interval '1 second'"),
    "message_relationships": ("relationship_type", "'sentinel'"),
    "message_context_items": ("relevance_score", "0.5"),
    "text_content": ("word_count", "word_count + 1"), "code_content": ("line_count", "line_count + 1"),
}
WEIGHTS = [
    ("user_insert", 2), ("user_update", 2), ("user_delete", 1), ("program_update", 1), ("project_update", 1),
    ("project_move", 1), ("thread_insert", 2), ("thread_update", 2), ("thread_move", 1), ("thread_delete", 1),
    ("item_insert", 3), ("item_update", 3), ("item_move", 2), ("item_delete", 1.5), ("item_rekey", 1),
    ("body", 3), ("chunk", 3), ("tag_insert", 2), ("tag_change", 3), ("message_insert", 3),
    ("message_change", 3), ("membership", 4), ("thread_rel", 4), ("thread_content", 5), ("content_tag", 5),
    ("message_rel", 4), ("context_item", 4), ("tenant_update", 0.5),
]


# --- the comparison ---------------------------------------------------------------

def _norm(v, typ):
    if v is None:
        return None
    if typ in ("float", "numeric"):
        return round(float(v), 6)
    if typ in ("timestamptz", "timestamp"):
        return _instant(str(v))
    if typ in ("uuid", "text", "enum", "date"):
        return str(v)
    if typ == "text_array":
        return list(v)
    if typ == "json":
        return json.loads(v) if isinstance(v, str) else v
    return v


_ISO = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?(Z|[+-]\d\d:?\d\d)?$")


def _instant(text):
    """An ISO 8601 date-time as one canonical string: Neo4j's HTTP API
    prints temporal values in their shortest form (10:00Z, .250), the
    PostgreSQL side prints every microsecond."""
    m = _ISO.match(text)
    if not m:
        return text
    day, hh, mm, ss, frac, zone = m.groups()
    return f"{day}T{hh}:{mm}:{ss or '00'}.{(frac or '').ljust(6, '0')[:6]}{'Z' if zone in ('Z', '+00:00', '+0000') else zone or ''}"


def _pg_expr(col, typ):
    if typ in ("uuid", "enum"):
        return f"{col}::text"
    if typ == "date":
        return f"to_char({col}, 'YYYY-MM-DD')"
    # as the workers write them (common/convert.c): ISO 8601, microseconds
    if typ == "timestamptz":
        return f"to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    if typ == "timestamp":
        return f"to_char({col}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    if typ == "json":
        return f"{col}::text"
    return col


def diverge(nx, tenant, ids, limit=6):
    """Lines naming every difference between the tenant's rows and the graph
    elements keyed by ids (empty when the graph is what PostgreSQL says)."""
    idlist = "[" + ", ".join(f"'{i}'" for i in sorted(ids)) + "]"
    tsc = f"'{tenant}'"
    sql, cyp, plan = [], [], []
    for t in captured_tables():
        props = [(c, p, typ) for c, p, typ, *_ in t.get("properties", []) if typ in COMPARED]
        scope = TENANT_SCOPE[t["table"]].format(t=tsc)
        if "node" in t:
            nd = t["node"]
            label, kcol, kprop = nd["label"], nd["key_column"], nd["key_property"]
            cols = ", ".join([f"{kcol}::text"] + [_pg_expr(c, typ) for c, _, typ in props])
            sql.append(f"SELECT json_build_array({cols})::text FROM {t['table']} WHERE {scope}")
            ret = ", ".join([f"n.{kprop}"] + [f"n.{p}" for _, p, _ in props] + ["n.srcLsn IS NULL"])
            cyp.append(f"MATCH (n:{label}) WHERE n.{kprop} IN {idlist} RETURN [{ret}]")
            plan.append((f"{t['table']} (:{label})", 1, props, True))
            for par in t.get("parents", []):
                sql.append(f"SELECT json_build_array({par['column']}::text, {kcol}::text)::text FROM {t['table']} "
                           f"WHERE {scope} AND {par['column']} IS NOT NULL")
                cyp.append(f"MATCH (p:{par['label']})-[:{par['type']}]->(n:{label}) WHERE n.{kprop} IN {idlist} "
                           f"RETURN [p.id, n.{kprop}]")
                plan.append((f"{t['table']} parent (:{par['label']})-[:{par['type']}]->(:{label})", 2, [], False))
        else:
            r = t["relationship"]
            a, b = r["from"], r["to"]
            where = " AND r.validTo IS NULL" if r.get("temporal") else ""
            cols = ", ".join([f"{a['column']}::text", f"{b['column']}::text"] +
                             [_pg_expr(c, typ) for c, _, typ in props])
            sql.append(f"SELECT json_build_array({cols})::text FROM {t['table']} WHERE {scope}")
            ret = ", ".join(["a.id", "b.id"] + [f"r.{p}" for _, p, _ in props])
            cyp.append(f"MATCH (a:{a['label']})-[r:{r['type']}]->(b:{b['label']}) "
                       f"WHERE (a.id IN {idlist} OR b.id IN {idlist}){where} RETURN [{ret}]")
            plan.append((f"{t['table']} (:{a['label']})-[:{r['type']}]->(:{b['label']})", 2, props, False))
    # PostgreSQL: one psql call; Neo4j: one request
    text = "".join(f"SELECT '{i}' || chr(9) || q.j FROM ({s}) AS q(j);\n" for i, s in enumerate(sql))
    pg = [[] for _ in sql]
    for line in nx.psql(text).splitlines():
        if line.strip():
            i, j = line.split("\t", 1)
            pg[int(i)].append(json.loads(j))
    neo = [[row[0] for row in _cypher_rows(nx, c)] for c in cyp]
    out = []
    for (what, nkey, props, node), prow, nrow in zip(plan, pg, neo):
        def keyed(rows, graph):
            d, dup, ph = {}, [], []
            for row in rows:
                k = row[0] if nkey == 1 else tuple(row[:nkey])
                vals = [_norm(v, typ) for v, (_, _, typ) in zip(row[nkey:], props)]
                if graph and node and row[-1]:
                    ph.append(k)
                if k in d:
                    dup.append(k)
                d[k] = vals
            return d, dup, ph
        pd, _, _ = keyed(prow, False)
        gd, dup, ph = keyed(nrow, True)
        missing = sorted(k for k in pd if k not in gd)
        extra = sorted(k for k in gd if k not in pd)
        differ = sorted(k for k in pd if k in gd and gd[k] != pd[k] and k not in ph)
        if missing:
            out.append(f"{what}: {len(missing)} missing in Neo4j: {missing[:limit]}")
        if extra:
            out.append(f"{what}: {len(extra)} extra in Neo4j (deleted in PostgreSQL, or never there): "
                       f"{extra[:limit]}")
        if dup:
            out.append(f"{what}: {len(dup)} duplicated in Neo4j: {dup[:limit]}")
        phk = [k for k in ph if k in pd]
        if phk:
            out.append(f"{what}: {len(phk)} only a bare placeholder in Neo4j: {phk[:limit]}")
        if differ:
            names = [p for _, p, _ in props]
            out.append(f"{what}: {len(differ)} differ ({names}), e.g. (key, PostgreSQL, Neo4j) "
                       f"{[(k, pd[k], gd[k]) for k in differ[:limit]]}")
    return out


def _cypher_rows(nx, statement):
    return [list(r.values()) for r in nx.cypher(statement, timeout=300)]


def graph_history(nx, key_a, key_b=None):
    """What Neo4j holds about one node key or link pair: the node(s), the
    relationships between the two and the tombstones naming them (for a
    failure report)."""
    if key_b is None:
        return nx.cypher("MATCH (n) WHERE n.id = $a OR (n:NexusTombstone AND n.key CONTAINS $a) "
                         "RETURN labels(n) AS l, properties(n) AS p", {"a": key_a})
    return nx.cypher("MATCH (a {id: $a})-[r]-(b {id: $b}) RETURN type(r) AS t, properties(r) AS p, "
                     "startNode(r).id = $a AS from_a UNION ALL "
                     "MATCH (n:NexusTombstone) WHERE n.key CONTAINS $a AND n.key CONTAINS $b "
                     "RETURN 'tombstone' AS t, properties(n) AS p, null AS from_a", {"a": key_a, "b": key_b})
