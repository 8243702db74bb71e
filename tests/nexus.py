"""Helpers for the real-stack tests: PostgreSQL through psql, Neo4j through
its HTTP API, Kafka through kcat, and worker processes. Standard library
only; every call goes to the servers the local stack started on loopback."""
import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where the worker binaries are: bin/, or another build of them (the
# ASan/UBSan one in build/asan/bin) through NEXUS_WORKER_BIN_DIR.
BIN = os.path.abspath(os.environ.get("NEXUS_WORKER_BIN_DIR") or os.path.join(ROOT, "bin"))


def new_id():
    """A fresh uuid, as text."""
    import uuid
    return str(uuid.uuid4())


def new_tags(nx, project, n, prefix):
    """n tags named prefix-0.. in the project fixture's project; their ids."""
    ids = [new_id() for _ in range(n)]
    nx.psql("INSERT INTO tags (id, project_id, tenant_id, name) VALUES " + ", ".join(
        f"('{i}', '{project['project']}', '{project['tenant']}', '{prefix}-{k}')" for k, i in enumerate(ids)))
    return ids


def tags_applied(nx, ids):
    """How many of the tags ids a worker has written to Neo4j (not only as
    a bare placeholder)."""
    return nx.cypher_value("MATCH (t:Tag) WHERE t.id IN $ids AND t.srcLsn IS NOT NULL RETURN count(t)",
                           {"ids": ids})


def wait_until(pred, timeout=60.0, interval=0.25, what="condition"):
    """Poll pred() until it returns a truthy value; fail after timeout,
    stretched by NEXUS_TEST_TIME_SCALE (slow builds: ASan, valgrind)."""
    timeout *= float(os.environ.get("NEXUS_TEST_TIME_SCALE") or 1)
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class Stack:
    def __init__(self, env):
        self.env = env

    # --- PostgreSQL -------------------------------------------------------
    def psql(self, sql, user=None, password=None, check=True):
        e = dict(os.environ)
        e["PGPASSWORD"] = password or self.env["NEXUS_PG_ADMIN_PASSWORD"]
        cmd = ["psql", "-h", self.env["NEXUS_PG_HOST"], "-p", self.env["NEXUS_PG_PORT"],
               "-U", user or self.env["NEXUS_PG_ADMIN_USER"], "-d", self.env["NEXUS_PG_DB"],
               "-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A", "-F", "\t"]
        p = subprocess.run(cmd, input=sql, env=e, capture_output=True, text=True, timeout=300)
        if check and p.returncode != 0:
            raise AssertionError(f"psql failed: {p.stderr.strip()}\nSQL: {sql[:500]}")
        return p.stdout.strip()

    def rows(self, sql):
        out = self.psql(sql)
        return [line.split("\t") for line in out.splitlines() if line]

    def scalar(self, sql):
        return self.psql(sql).strip()

    # --- Neo4j ------------------------------------------------------------
    def cypher(self, statement, params=None, timeout=60):
        body = json.dumps({"statements": [{"statement": statement, "parameters": params or {}}]}).encode()
        req = urllib.request.Request(
            self.env["NEXUS_NEO4J_URL"].rstrip("/") + "/db/neo4j/tx/commit", data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "Authorization": "Basic " + base64.b64encode(
                         f'{self.env["NEXUS_NEO4J_USER"]}:{self.env["NEXUS_NEO4J_PASSWORD"]}'.encode()).decode()})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.load(resp)
        if doc.get("errors"):
            raise AssertionError(f"cypher failed: {doc['errors']}\n{statement}")
        res = doc["results"][0]
        return [dict(zip(res["columns"], d["row"])) for d in res["data"]]

    def cypher_value(self, statement, params=None):
        rows = self.cypher(statement, params)
        return next(iter(rows[0].values())) if rows else None

    # --- Kafka ------------------------------------------------------------
    def kcat(self, *args, timeout=60, input=None):
        cmd = ["kcat", "-b", self.env["NEXUS_KAFKA_BOOTSTRAP"], *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if p.returncode != 0:
            raise AssertionError(f"kcat failed: {p.stderr.strip()}")
        return p.stdout

    def consume_all(self, topic, timeout=30):
        """Every message of a topic, as kcat -J dicts, from the beginning."""
        out = self.kcat("-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q", timeout=timeout)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def end_offset_total(self, topic):
        """Sum of the high watermarks of every partition of a topic."""
        parts = int(self.env.get("NEXUS_TOPIC_PARTITIONS", "4"))
        args = []
        for p in range(parts):
            args += ["-t", f"{topic}:{p}:-1"]
        out = self.kcat("-Q", *args)
        total = 0
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[-2] == "offset":
                total += int(fields[-1])
        return total

    # --- workers ----------------------------------------------------------
    def worker_env(self, **extra):
        e = dict(os.environ)
        e.update(self.env)
        e.setdefault("NEXUS_MAPPING", os.path.join(ROOT, "schemas", "mapping.cfg"))
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def start_worker(self, name, log_path, args=(), **extra):
        log = open(log_path, "ab")
        return subprocess.Popen([os.path.join(BIN, f"{name}_worker"), *args], env=self.worker_env(**extra),
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_worker(proc, timeout=30):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Worker:
    """One worker process with its own stats folder and log."""

    def __init__(self, nx, name, workdir, group, args=(), **env):
        self.nx, self.name, self.group, self.env, self.args = nx, name, group, env, tuple(args)
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, f"{name}.log")
        self.proc = None

    def start(self, **extra):
        env = dict(self.env)
        env.update(extra)
        for f in os.listdir(self.dir):
            if f.endswith(".json"):
                os.unlink(os.path.join(self.dir, f))
        self.proc = self.nx.start_worker(self.name, self.log, args=self.args, NEXUS_GROUP_ID=self.group,
                                         NEXUS_STATS_DIR=self.dir, **env)
        return self

    def stats(self):
        path = os.path.join(self.dir, f"{self.name}-{self.proc.pid}.json")
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def total(self, field):
        s = self.stats()
        return sum(l[field] for l in s["lanes"].values()) if s else 0

    def caught_up(self, quiet_s=1.5):
        """Lag 0 on every lane, and nothing consumed for quiet_s."""
        s1 = self.stats()
        if not s1 or any(l["lag"] for l in s1["lanes"].values()):
            return False
        time.sleep(quiet_s)
        s2 = self.stats()
        return s2 and self.total("consumed") == sum(l["consumed"] for l in s1["lanes"].values()) \
            and not any(l["lag"] for l in s2["lanes"].values())

    def wait_caught_up(self, timeout=120, quiet_s=1.5):
        wait_until(lambda: self.caught_up(quiet_s), timeout, interval=0.5, what=f"{self.name} caught up")

    def stop(self):
        rc = stop_worker(self.proc)
        return rc

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()


def run_tool(nx, name, *args, timeout=120, **env):
    """Run bin/NAME ARGS with the stack's settings (and env, NAME=value);
    the CompletedProcess."""
    return subprocess.run([os.path.join(BIN, name), *args], env=nx.worker_env(**env), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def worker_topics(nx, worker):
    """The lane topics of one worker, from bin/nexus-schema topics."""
    p = run_tool(nx, "nexus-schema", "topics")
    assert p.returncode == 0, p.stderr
    return [t for t in p.stdout.split() if t.endswith("." + worker)]


def end_offsets(nx, topics):
    """{(topic, partition): high watermark}."""
    args = []
    for t in topics:
        for p in range(int(nx.env.get("NEXUS_TOPIC_PARTITIONS", "4"))):
            args += ["-t", f"{t}:{p}:-1"]
    ends = {}
    for line in nx.kcat("-Q", *args).splitlines():
        f = line.split()
        if len(f) >= 4 and f[-2] == "offset":
            ends[(f[0], int(f[1].strip("[]")))] = int(f[-1])
    return ends


def save_end_offsets(nx, worker, path, topics=None):
    """Write the high watermarks of the worker's lane topics (or of topics)
    to path in the format of nexus-replay --save, so that a later
    `nexus-replay --from-file path` places a group at exactly the messages
    written after this call: a replay point taken from Kafka offsets, never
    from the test's clock. Returns {(topic, partition): offset}."""
    ends = end_offsets(nx, topics or worker_topics(nx, worker))
    doc = {"offsets": [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(ends.items())]}
    with open(path, "w") as f:
        json.dump(doc, f)
    return ends


def record_timestamp(nx, topic, partition, offset):
    """The timestamp (ms) Kafka holds for one record: a time to cut at that
    comes from the broker, not from the test process."""
    out = nx.kcat("-C", "-t", topic, "-p", str(partition), "-o", str(offset), "-c", "1", "-e", "-q",
                  "-f", "%T\\n")
    return int(out.split()[0])


def committed_offsets(nx, worker, group):
    """{(topic, partition): committed offset or None}, by nexus-replay."""
    p = run_tool(nx, "nexus-replay", "--worker", worker, "--group", group, "--save", "-")
    assert p.returncode == 0, p.stderr
    return {(o["topic"], o["partition"]): o["offset"] for o in json.loads(p.stdout)["offsets"]}


def group_caught_up(nx, worker, group):
    """The group has committed every message of the worker's topics, and
    still has after a short pause (the write-back echoes come after)."""
    for _ in range(2):
        ends = end_offsets(nx, worker_topics(nx, worker))
        done = committed_offsets(nx, worker, group)
        if any((done.get(k) or 0) < v for k, v in ends.items()):
            return False
        time.sleep(1.0)
    return True


def wait_group_caught_up(nx, worker, group, timeout=600):
    wait_until(lambda: group_caught_up(nx, worker, group), timeout, interval=1.0,
               what=f"group {group} committed everything of {worker}")


def graph_dump(nx, project_id):
    """Everything under one project, as sorted text, for comparisons."""
    rows = nx.cypher("""
        MATCH (p:Project {id: $id})-[*0..3]-(n) WITH DISTINCT n
        OPTIONAL MATCH (n)-[r]->(m)
        RETURN labels(n) AS l, properties(n) AS p, type(r) AS t,
               CASE WHEN r IS NULL THEN null ELSE properties(r) END AS rp, m.id AS m""", {"id": project_id})
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


def canonical_dump(nx, tenant=None, tombstone_keys=()):
    """The graph as sorted text lines: every node (labels, properties) and
    every relationship (type, both ends by label and key, properties).
    Element ids are left out, so a rebuilt graph compares equal. With
    tenant: only what hangs under that Tenant node (its parent chains, up
    to 6 levels), the relationships among those nodes and the tombstones
    named in tombstone_keys."""
    if tenant is None:
        nodes = nx.cypher("MATCH (n) RETURN labels(n) AS l, properties(n) AS p", timeout=600)
        rels = nx.cypher("MATCH (a)-[r]->(b) RETURN labels(a) AS al, coalesce(a.id, a.key) AS a, type(r) AS t, "
                         "properties(r) AS p, labels(b) AS bl, coalesce(b.id, b.key) AS b", timeout=600)
    else:
        scope = "MATCH (t:Tenant {id: $t}) MATCH (t)-[*0..6]->(n) WITH DISTINCT n "
        nodes = nx.cypher(scope + "RETURN labels(n) AS l, properties(n) AS p", {"t": tenant})
        nodes += nx.cypher("MATCH (n:NexusTombstone) WHERE n.key IN $k RETURN labels(n) AS l, properties(n) AS p",
                           {"k": list(tombstone_keys)})
        rels = nx.cypher(scope + "WITH collect(n) AS ns UNWIND ns AS a MATCH (a)-[r]->(b) WHERE b IN ns "
                         "RETURN labels(a) AS al, a.id AS a, type(r) AS t, properties(r) AS p, "
                         "labels(b) AS bl, b.id AS b", {"t": tenant})
    return sorted(["node " + json.dumps(r, sort_keys=True) for r in nodes] +
                  ["rel " + json.dumps(r, sort_keys=True) for r in rels])


def empty_graph(nx):
    """Delete every node and relationship of the graph in chunks, and drop
    every constraint: Neo4j as a fresh database. Workers recreate their
    constraints when they start."""
    # relationships first: a DETACH DELETE of a hub (a project of the
    # benchmark's) would take all its relationships in one transaction
    while nx.cypher_value("MATCH ()-[r]->() WITH r LIMIT 20000 DELETE r RETURN count(*)"):
        pass
    while nx.cypher_value("MATCH (n) WITH n LIMIT 20000 DELETE n RETURN count(*)"):
        pass
    for row in nx.cypher("SHOW CONSTRAINTS YIELD name RETURN name"):
        nx.cypher(f"DROP CONSTRAINT `{row['name']}` IF EXISTS")


# Workers a test started (track()); conftest stops those still running
# after every test, so a failing test does not leave its workers behind.
_tracked = []


def track(worker):
    _tracked.append(worker)
    return worker


def stop_tracked():
    while _tracked:
        w = _tracked.pop()
        if w.proc and w.proc.poll() is None:
            w.stop()


class Proxy:
    """A TCP forwarder on loopback that a test can cut and restore, to play
    a server outage without touching the shared stack. While down it
    refuses new connections and closes the open ones."""

    def __init__(self, target_port):
        import socket
        import threading
        self.target = ("127.0.0.1", int(target_port))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.up = True
        self.conns = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        self.up = False
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(2)
                    c.close()
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.up = True

    def close(self):
        self.cut()
        self.sock.close()


def scratch_lanes(nx, workdir, worker, lanes=("normal",), partitions=1, configs=(), dotted=False,
                  dlq_configs=()):
    """A copy of the mapping whose topics are new scratch topics, created
    here: tests that inject made-up events use them, so no other consumer
    group ever replays those events into the shared graph. Returns
    (mapping path, prefix, cleanup function). configs: topic settings as
    "name=value" strings, for every topic made here; dlq_configs: more for
    the DLQ topic alone. dotted: a prefix with a dot in it
    ("scratch.x...")."""
    import uuid as _uuid
    p = subprocess.run(["make", "-s", "-C", ROOT, "clients"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    admin = os.path.join(ROOT, "build", "tests", "clients", "kafka_admin")
    prefix = f"scratch{'.x' if dotted else ''}{_uuid.uuid4().hex[:10]}"
    text = open(os.path.join(ROOT, "schemas", "mapping.cfg")).read()
    text = text.replace('topic_prefix = "nexus";', f'topic_prefix = "{prefix}";')
    text = text.replace('dlq_topic = "nexus.dlq";', f'dlq_topic = "{prefix}.dlq";')
    path = os.path.join(workdir, "mapping.cfg")
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    topics = [f"{prefix}.{lane}.{worker}" for lane in lanes] + [f"{prefix}.dlq"]
    boot = nx.env["NEXUS_KAFKA_BOOTSTRAP"]
    for t in topics:
        extra = dlq_configs if t.endswith(".dlq") else ()
        p = subprocess.run([admin, boot, "create", t, str(partitions), *configs, *extra], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr

    def cleanup():
        for t in topics:
            subprocess.run([admin, boot, "delete", t], capture_output=True, text=True, timeout=60)
    return path, prefix, cleanup
