"""TLS on the local stack: the stack's CA and server certificate, PostgreSQL
with ssl=on, Neo4j over HTTPS and the broker's SSL listener, and workers
that sync over all three with verification on. A wrong CA or a host name
that is not in the certificate fails loudly, and the worker retries
without losing or committing the events it could not apply."""
import json
import os
import socket
import ssl
import stat
import subprocess
import urllib.request

import pytest

from nexus import ROOT, Worker, new_id, wait_until

CLIENTS = os.path.join(ROOT, "build", "tests", "clients")


def port_of(url):
    return int(url.rstrip("/").rsplit(":", 1)[1])


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def tls(stack):
    """The stack's TLS settings; fails clearly on a stack started by a
    script without TLS (restart it: stack down, stack up)."""
    need = ("NEXUS_TLS_CA", "NEXUS_NEO4J_HTTPS_URL", "NEXUS_KAFKA_SSL_BOOTSTRAP")
    missing = [n for n in need if n not in stack]
    assert not missing, f"the stack env lacks {missing}: it was started before TLS support; " \
                        "run deploy/local/stack down, then up"
    for n in ("NEXUS_NEO4J_HTTPS_URL", "NEXUS_KAFKA_SSL_BOOTSTRAP"):
        assert port_open(port_of(stack[n])), f"nothing listens for {n}={stack[n]}; restart the stack"
    return stack


def make_ca(directory, name):
    """A CA of the test's own (not the stack's): its certificate path."""
    key, crt = os.path.join(directory, f"{name}.key"), os.path.join(directory, f"{name}.crt")
    p = subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-noenc",
                        "-days", "1", "-subj", f"/CN={name}", "-keyout", key, "-out", crt],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return crt


def tls_worker_env(tls, ca=None, pg_ca=None, neo4j_ca=None, kafka_ca=None, kafka_ssl=False):
    """Worker settings that reach PostgreSQL (verify-full) and Neo4j
    (https) over TLS, each trusting the given CA file (default: the stack's)."""
    ca = ca or tls["NEXUS_TLS_CA"]
    env = {
        "NEXUS_NEO4J_URL": tls["NEXUS_NEO4J_HTTPS_URL"],
        "NEXUS_NEO4J_CA_FILE": neo4j_ca or ca,
        "NEXUS_PG_HOST": "127.0.0.1",
        "NEXUS_PG_SSLMODE": "verify-full",
        "NEXUS_PG_SSLROOTCERT": pg_ca or ca,
        "NEXUS_RETRY_MAX_MS": "1000",
    }
    if kafka_ssl:
        env["NEXUS_KAFKA_BOOTSTRAP"] = tls["NEXUS_KAFKA_SSL_BOOTSTRAP"]
    return env


def kafka_ssl_config(path, ca):
    """A worker config file whose kafka list turns on TLS (librdkafka
    properties, passed through unchanged)."""
    with open(path, "w") as f:
        f.write(f'mapping = "{os.path.join(ROOT, "schemas", "mapping.cfg")}";\n'
                'kafka = (\n'
                '  ["security.protocol", "ssl"],\n'
                f'  ["ssl.ca.location", "{ca}"]\n'
                ');\n')
    return str(path)


def start_tag_worker(nx, workdir, group, cfg, env):
    """tag_worker --config cfg in group, with its own stats folder and log."""
    w = Worker(nx, "tag", workdir, group, **env)
    w.proc = subprocess.Popen([os.path.join(ROOT, "bin", "tag_worker"), "--config", cfg],
                              env=nx.worker_env(NEXUS_GROUP_ID=group, NEXUS_STATS_DIR=w.dir, **env),
                              stdout=open(w.log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    return w


def insert_tag(nx, project, name):
    tid = new_id()
    nx.psql(f"INSERT INTO tags (id, project_id, tenant_id, name) VALUES "
            f"('{tid}', '{project['project']}', '{project['tenant']}', '{name}')")
    return tid


def tag_in_graph(nx, tid):
    return nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN count(t)", {"id": tid}) == 1


def sync_status(nx, tid):
    return nx.scalar(f"SELECT sync_status FROM tags WHERE id = '{tid}'")


# --- the stack's TLS material -------------------------------------------------


def test_stack_ca_and_server_certificate(tls):
    d = os.path.dirname(tls["NEXUS_TLS_CA"])
    assert stat.S_IMODE(os.stat(os.path.join(d, "ca.key")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(d, "server.key")).st_mode) == 0o600
    p = subprocess.run(["openssl", "verify", "-CAfile", tls["NEXUS_TLS_CA"],
                        os.path.join(d, "server.crt")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                        os.path.join(d, "server.crt")], capture_output=True, text=True)
    assert "IP Address:127.0.0.1" in p.stdout and "DNS:localhost" in p.stdout, p.stdout


def test_postgres_takes_tls_and_plain_connections(tls, nx):
    query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    env = dict(os.environ, PGPASSWORD=tls["NEXUS_WRITER_PASSWORD"])
    base = ["psql", "-X", "-tA", "-c", query]
    conn = (f"host=localhost hostaddr=127.0.0.1 port={tls['NEXUS_PG_PORT']} "
            f"dbname={tls['NEXUS_PG_DB']} user={tls['NEXUS_WRITER_USER']}")
    p = subprocess.run(base + [f"{conn} sslmode=verify-full sslrootcert={tls['NEXUS_TLS_CA']}"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "t", p.stderr
    p = subprocess.run(base + [f"{conn} sslmode=disable"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "f", p.stderr


def test_neo4j_https_with_the_stack_ca(tls):
    ctx = ssl.create_default_context(cafile=tls["NEXUS_TLS_CA"])
    req = urllib.request.Request(tls["NEXUS_NEO4J_HTTPS_URL"] + "/", headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.URLError) as e:
        urllib.request.urlopen(req, context=ssl.create_default_context(), timeout=30)
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)


def test_kafka_ssl_listener_with_the_stack_ca(tls):
    p = subprocess.run(["kcat", "-b", tls["NEXUS_KAFKA_SSL_BOOTSTRAP"], "-X", "security.protocol=ssl",
                        "-X", f"ssl.ca.location={tls['NEXUS_TLS_CA']}", "-L", "-m", "30"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "nexus.normal.tag" in p.stdout


# --- workers over TLS ---------------------------------------------------------


def test_worker_syncs_over_tls_to_all_three(tls, nx, project, tmp_path):
    """Kafka over SSL, Neo4j over https, PostgreSQL with verify-full, all
    trusting only the stack's CA: a new row reaches the graph and its
    write-back comes home over an encrypted connection."""
    cfg = kafka_ssl_config(tmp_path / "tls.cfg", tls["NEXUS_TLS_CA"])
    tid = insert_tag(nx, project, "tls-e2e")
    w = start_tag_worker(nx, str(tmp_path / "w"), f"tls-{new_id()[:8]}", cfg,
                         tls_worker_env(tls, kafka_ssl=True))
    try:
        wait_until(lambda: tag_in_graph(nx, tid), 180, 0.5, "the tag in Neo4j over https")
        wait_until(lambda: sync_status(nx, tid) == "SUCCESS", 120, 0.5, "SUCCESS written back")
        # the worker's PostgreSQL session is encrypted
        ssl_on = nx.scalar("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                           "USING (pid) WHERE a.application_name = 'nexus-tag' "
                           f"AND a.usename = '{tls['NEXUS_WRITER_USER']}'")
        assert ssl_on == "t", w.log_text()[-3000:]
    finally:
        assert w.stop() == 0, w.log_text()[-3000:]


WRONG_CA = ["neo4j", "postgres", "kafka"]


@pytest.mark.parametrize("server", WRONG_CA)
def test_wrong_ca_fails_clearly_and_loses_no_event(tls, nx, project, tmp_path, server):
    """A worker that trusts another CA for one server names the certificate
    problem, keeps retrying, commits nothing; the next worker of the group,
    with the right CA, applies the event."""
    other = make_ca(str(tmp_path), "other-ca")
    group = f"tls-bad-{server}-{new_id()[:8]}"
    cfg = kafka_ssl_config(tmp_path / "tls.cfg", other if server == "kafka" else tls["NEXUS_TLS_CA"])
    env = tls_worker_env(tls, kafka_ssl=True,
                         neo4j_ca=other if server == "neo4j" else None,
                         pg_ca=other if server == "postgres" else None)
    tid = insert_tag(nx, project, f"tls-bad-{server}")
    bad = start_tag_worker(nx, str(tmp_path / "bad"), group, cfg, env)
    expect = {
        "neo4j": "SSL certificate problem",
        "postgres": "certificate verify failed",
        "kafka": "certificate verify failed",
    }[server]
    try:
        text = bad.log_text
        wait_until(lambda: expect in text(), 180, 0.5, f"the {server} certificate error in the log")
        if server != "kafka":
            wait_until(lambda: text().count("retry") >= 2, 60, 0.5, "retries")
        assert bad.proc.poll() is None, text()[-3000:]
        # nothing got through: no SUCCESS, and for Neo4j not even the node
        assert sync_status(nx, tid) != "SUCCESS"
        if server != "postgres":
            assert not tag_in_graph(nx, tid)
    finally:
        bad.stop()
    good = start_tag_worker(nx, str(tmp_path / "good"), group,
                            kafka_ssl_config(tmp_path / "good.cfg", tls["NEXUS_TLS_CA"]),
                            tls_worker_env(tls, kafka_ssl=True))
    try:
        wait_until(lambda: sync_status(nx, tid) == "SUCCESS", 180, 0.5,
                   "the event applied by the next worker of the group")
        assert tag_in_graph(nx, tid)
    finally:
        assert good.stop() == 0, good.log_text()[-3000:]


def test_verify_full_refuses_a_host_name_not_in_the_certificate(tls, nx, tmp_path):
    """The write-back library with sslmode=verify-full: 'localhost' is in the
    certificate and connects; another name for the same address does not,
    and the error says so and counts as transient (retried, not lost)."""
    p = subprocess.run(["make", "-s", "-C", ROOT, "clients"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    client = os.path.join(CLIENTS, "pgstatus_client")
    mapping = os.path.join(ROOT, "schemas", "mapping.cfg")

    def write(host):
        conninfo = (f"host={host} hostaddr=127.0.0.1 port={tls['NEXUS_PG_PORT']} "
                    f"dbname={tls['NEXUS_PG_DB']} user={tls['NEXUS_WRITER_USER']} "
                    f"password={tls['NEXUS_WRITER_PASSWORD']} sslmode=verify-full "
                    f"sslrootcert={tls['NEXUS_TLS_CA']}")
        line = ('{"rows":[{"table":"tags","outcome":"FAILED","keys":["%s"],'
                '"error":"tls test"}]}\n' % new_id())
        p = subprocess.run([client, conninfo, mapping], input=line, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.splitlines()[0])

    ok = write("localhost")
    assert ok["err"] == "ok", ok
    bad = write("nexus-not-in-cert.invalid")
    assert bad["err"] == "pg_transient", bad
    assert "does not match host name" in bad["errstr"] and "certificate" in bad["errstr"], bad
