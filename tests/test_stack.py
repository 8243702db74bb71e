"""The local stack itself (deploy/local/stack): a second `up` is a no-op,
`status` sees every component, the servers listen on loopback only, Neo4j
enforces its password, the mapping's topics and the Debezium connector are
in place. In a stack of their own (other folder and ports, so the shared
stack is never restarted under another session): a failing `up` cleans up
after itself, and `down` then `up` restores a stack with its data."""
import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, STACK_SCRIPT, read_env_file, run_stack, stack_dir, stack_up

COMPONENTS = ["pg", "kafka", "connect", "neo4j"]
ENV_KEYS = [
    "NEXUS_PG_HOST", "NEXUS_PG_PORT", "NEXUS_PG_DB",
    "NEXUS_PG_ADMIN_USER", "NEXUS_PG_ADMIN_PASSWORD",
    "NEXUS_WRITER_USER", "NEXUS_WRITER_PASSWORD",
    "NEXUS_CDC_USER", "NEXUS_CDC_PASSWORD",
    "NEXUS_KAFKA_BOOTSTRAP", "NEXUS_CONNECT_URL",
    "NEXUS_NEO4J_URL", "NEXUS_NEO4J_USER", "NEXUS_NEO4J_PASSWORD",
    "NEXUS_TOPIC_PARTITIONS", "NEXUS_NEO4J_VERSION",
]


def pids(directory):
    run = os.path.join(directory, "run")
    out = {}
    for c in COMPONENTS:
        try:
            with open(os.path.join(run, f"{c}.pid")) as f:
                out[c] = int(f.read().strip())
        except (OSError, ValueError):
            out[c] = None
    return out


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def server_processes(path):
    """Pids of java/postgres processes whose command line names path."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        exe = os.path.basename(argv[0].decode(errors="replace"))
        if exe in ("java", "postgres") and path.encode() in b" ".join(argv):
            found.append(int(d))
    return found


def listen_addresses():
    """{port: {address, ...}} of every listening TCP socket (IPv4 and IPv6)."""
    out = {}
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(name) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            if width == 8:
                addr = socket.inet_ntop(socket.AF_INET, raw)
            else:
                addr = socket.inet_ntop(socket.AF_INET6, raw)
            out.setdefault(int(port_hex, 16), set()).add(addr)
    return out


def port(url_or_hostport):
    return int(url_or_hostport.rstrip("/").rsplit(":", 1)[1])


def cypher(env, statement, password=None, timeout=30):
    body = json.dumps({"statements": [{"statement": statement}]}).encode()
    token = base64.b64encode(
        f'{env["NEXUS_NEO4J_USER"]}:{password or env["NEXUS_NEO4J_PASSWORD"]}'.encode()).decode()
    req = urllib.request.Request(
        env["NEXUS_NEO4J_URL"].rstrip("/") + "/db/neo4j/tx/commit", data=body,
        headers={"Content-Type": "application/json", "Accept": "application/json",
                 "Authorization": "Basic " + token})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.load(resp)


def psql(env, sql, user=None, password=None, db=None):
    e = dict(os.environ, PGPASSWORD=password or env["NEXUS_PG_ADMIN_PASSWORD"],
             PGCONNECT_TIMEOUT="10")
    return subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
         "-h", env["NEXUS_PG_HOST"], "-p", env["NEXUS_PG_PORT"],
         "-U", user or env["NEXUS_PG_ADMIN_USER"], "-d", db or env["NEXUS_PG_DB"], "-c", sql],
        env=e, capture_output=True, text=True, timeout=60)


def connector_status(env):
    url = f'{env["NEXUS_CONNECT_URL"]}/connectors/{env.get("NEXUS_CONNECTOR", "nexus-postgres")}/status'
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def mapping_topics():
    p = subprocess.run([os.path.join(ROOT, "bin", "nexus-schema"), "--mapping",
                        os.path.join(ROOT, "schemas", "mapping.cfg"), "topics"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [t for t in p.stdout.split() if t]


def status_lines(env=None):
    p = run_stack("status", env=env, timeout=120)
    states = {}
    for line in p.stdout.splitlines():
        words = line.split()
        if len(words) >= 2:
            states[words[0]] = words[1]
    return p.returncode, states, p.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the shared stack ------------------------------------------------------


def test_env_file_has_every_setting(stack):
    missing = [k for k in ENV_KEYS if not stack.get(k)]
    assert not missing, f"env file lacks {missing}"
    assert stack["NEXUS_PG_HOST"] == "127.0.0.1"
    assert stack["NEXUS_NEO4J_USER"] == "neo4j"
    assert stack["NEXUS_KAFKA_BOOTSTRAP"].startswith("127.0.0.1:")
    p = run_stack("env", timeout=60)
    assert p.returncode == 0
    assert "export NEXUS_NEO4J_PASSWORD=" in p.stdout


def test_second_up_is_harmless_and_fast(stack):
    directory = stack_dir()
    before = pids(directory)
    t0 = time.monotonic()
    p = run_stack("up")
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert pids(directory) == before, "a second up restarted a component"
    assert all(alive(pid) for pid in before.values()), before
    assert took < 20, f"a second up took {took:.1f}s"
    assert read_env_file(os.path.join(directory, "env")) == stack


def test_status_reports_every_component_up(stack):
    rc, states, out = status_lines()
    assert rc == 0, out
    for c in COMPONENTS + ["connector"]:
        assert states.get(c) == "up", out


def test_servers_listen_on_loopback_only(stack):
    ports = {
        "pg": int(stack["NEXUS_PG_PORT"]),
        "kafka": port(stack["NEXUS_KAFKA_BOOTSTRAP"]),
        "kafka controller": int(os.environ.get("NEXUS_KAFKA_CONTROLLER_PORT", "59093")),
        "connect": port(stack["NEXUS_CONNECT_URL"]),
        "neo4j http": port(stack["NEXUS_NEO4J_URL"]),
        "neo4j bolt": port(stack.get("NEXUS_NEO4J_BOLT_URL", "bolt://127.0.0.1:57687")),
        "neo4j https": port(stack["NEXUS_NEO4J_HTTPS_URL"]),
        "kafka ssl": port(stack["NEXUS_KAFKA_SSL_BOOTSTRAP"]),
    }
    listening = listen_addresses()
    for what, p in ports.items():
        addrs = listening.get(p)
        assert addrs, f"{what}: nothing listens on port {p}"
        assert addrs <= {"127.0.0.1", "::ffff:127.0.0.1"}, f"{what} listens on {addrs}"


def test_postgres_roles_and_logical_wal(stack):
    p = psql(stack, "SHOW wal_level")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "logical"
    p = psql(stack, "SELECT rolreplication FROM pg_roles WHERE rolname = current_user",
             user=stack["NEXUS_CDC_USER"], password=stack["NEXUS_CDC_PASSWORD"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "t"
    p = psql(stack, "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user",
             user=stack["NEXUS_WRITER_USER"], password=stack["NEXUS_WRITER_PASSWORD"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "f"
    p = psql(stack, "SELECT 1", password="not-the-password")
    assert p.returncode != 0
    assert "password authentication failed" in p.stderr


def test_neo4j_answers_cypher_with_auth(stack):
    status, doc = cypher(stack, "RETURN 1 AS one")
    assert status == 200
    assert doc["errors"] == []
    assert doc["results"][0]["data"][0]["row"] == [1]


def test_neo4j_rejects_a_wrong_password(stack):
    with pytest.raises(urllib.error.HTTPError) as e:
        cypher(stack, "RETURN 1", password="not-the-password")
    assert e.value.code == 401


def test_topics_exist_with_configured_partitions(stack):
    want = int(stack["NEXUS_TOPIC_PARTITIONS"])
    p = subprocess.run(["kcat", "-b", stack["NEXUS_KAFKA_BOOTSTRAP"], "-L", "-J", "-m", "10"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    have = {t["topic"]: len(t["partitions"]) for t in json.loads(p.stdout)["topics"]}
    topics = mapping_topics()
    assert topics
    for t in topics:
        assert t in have, f"topic {t} is missing"
        assert have[t] == want, f"topic {t} has {have[t]} partitions, want {want}"


def test_connector_is_running(stack):
    st = connector_status(stack)
    assert st["connector"]["state"] == "RUNNING", st
    assert st["tasks"], st
    assert all(t["state"] == "RUNNING" for t in st["tasks"]), st


# --- isolated stacks: own folder, own ports ----------------------------------


@pytest.fixture
def isolated(tmp_path):
    """Settings for a second stack beside the shared one (which is never
    restarted here: other test sessions may be using it). Wiped afterwards."""
    env = {
        "NEXUS_STACK_DIR": str(tmp_path / "stack"),
        "NEXUS_PG_PORT": str(free_port()),
        "NEXUS_KAFKA_PORT": str(free_port()),
        "NEXUS_KAFKA_CONTROLLER_PORT": str(free_port()),
        "NEXUS_CONNECT_PORT": str(free_port()),
        "NEXUS_NEO4J_HTTP_PORT": str(free_port()),
        "NEXUS_NEO4J_BOLT_PORT": str(free_port()),
        "NEXUS_NEO4J_HTTPS_PORT": str(free_port()),
        "NEXUS_KAFKA_SSL_PORT": str(free_port()),
    }
    yield env
    p = run_stack("reset", env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert server_processes(env["NEXUS_STACK_DIR"]) == []


def test_neo4j_version_names_one_of_the_poms_or_is_refused(isolated):
    """NEXUS_NEO4J_VERSION picks maven/neo4j*-pom.xml by version or series;
    anything else is refused by name before a server starts."""
    p = run_stack("up", env=dict(isolated, NEXUS_NEO4J_VERSION="4.4"), timeout=120)
    assert p.returncode != 0
    assert "NEXUS_NEO4J_VERSION='4.4' names no Neo4j" in p.stderr, p.stderr
    assert server_processes(isolated["NEXUS_STACK_DIR"]) == []


def test_a_stack_refuses_another_neo4j_than_its_data_was_made_by(isolated):
    """Data written by 5.26 is not handed to 2026 (nor back) half-way: up
    says which made it and what to do, and starts nothing."""
    directory = isolated["NEXUS_STACK_DIR"]
    os.makedirs(os.path.join(directory, "neo4j", "data"))
    open(os.path.join(directory, ".nexus-stack"), "w").close()
    with open(os.path.join(directory, "neo4j", "data", ".nexus-neo4j-version"), "w") as f:
        f.write("5.26.30\n")
    p = run_stack("up", env=dict(isolated, NEXUS_NEO4J_VERSION="2026"), timeout=120)
    assert p.returncode != 0
    assert "Neo4j data was made by 5.26.30" in p.stderr and "2026." in p.stderr, p.stderr
    assert "use another NEXUS_STACK_DIR, or 'stack reset' first" in p.stderr, p.stderr
    assert server_processes(directory) == []


def test_failed_up_names_the_component_and_stops_what_it_started(isolated):
    """With a 1 s readiness timeout the broker cannot be ready: up must name
    it and its log, and leave no server of that folder running."""
    directory = isolated["NEXUS_STACK_DIR"]
    p = run_stack("up", env=dict(isolated, NEXUS_STACK_TIMEOUT="1"))
    assert p.returncode != 0, p.stderr
    assert "error: kafka:" in p.stderr, p.stderr
    assert os.path.join(directory, "logs", "kafka.log") in p.stderr, p.stderr
    assert "stopping what this run started" in p.stderr, p.stderr
    started = pids(directory)
    assert not any(alive(pid) for pid in started.values()), started
    assert server_processes(directory) == []
    rc, states, out = status_lines(isolated)
    assert rc != 0
    assert all(states.get(c) == "down" for c in COMPONENTS), out


def test_down_stops_everything_then_up_restores(isolated):
    """A cold up, down (no process left, data kept), then up again."""
    directory = isolated["NEXUS_STACK_DIR"]
    env = stack_up(isolated)
    assert env["NEXUS_PG_PORT"] == isolated["NEXUS_PG_PORT"]
    before = pids(directory)
    assert all(alive(pid) for pid in before.values()), before
    rc, states, out = status_lines(isolated)
    assert rc == 0, out
    # the env file alone (no port variable of the caller) reaches this stack:
    # before, `status` then looked at the default ports
    bare = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    p = subprocess.run(["bash", "-c", f". {os.path.join(directory, 'env')} && bash {STACK_SCRIPT} status"],
                       env=bare, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and f"127.0.0.1:{isolated['NEXUS_NEO4J_HTTP_PORT']}" in p.stdout, p.stdout + p.stderr
    marker = psql(env, "INSERT INTO tenants (name, slug) VALUES ('stack-test', 'stack-test') "
                       "RETURNING id")
    assert marker.returncode == 0, marker.stderr

    p = run_stack("down", env=isolated, timeout=600)
    assert p.returncode == 0, p.stderr
    for c, pid in before.items():
        assert not alive(pid), f"{c} (pid {pid}) still runs after down"
    assert server_processes(directory) == []
    listening = listen_addresses()
    for name in ("NEXUS_PG_PORT", "NEXUS_KAFKA_PORT", "NEXUS_CONNECT_PORT",
                 "NEXUS_NEO4J_HTTP_PORT", "NEXUS_NEO4J_BOLT_PORT",
                 "NEXUS_NEO4J_HTTPS_PORT", "NEXUS_KAFKA_SSL_PORT"):
        assert int(isolated[name]) not in listening, f"{name} still listens after down"
    rc, states, out = status_lines(isolated)
    assert rc != 0
    assert all(states.get(c) == "down" for c in COMPONENTS), out

    again = stack_up(isolated)
    assert again == env, "up after down changed the settings (passwords?)"
    after = pids(directory)
    assert all(alive(pid) for pid in after.values()), after
    assert all(after[c] != before[c] for c in COMPONENTS)
    rc, states, out = status_lines(isolated)
    assert rc == 0, out
    status, _ = cypher(env, "RETURN 1")
    assert status == 200
    kept = psql(env, "SELECT id FROM tenants WHERE slug = 'stack-test'")
    assert kept.stdout == marker.stdout, "PostgreSQL data did not survive down/up"
    assert connector_status(env)["connector"]["state"] == "RUNNING"
