"""Worker configuration: one libconfig file plus environment overrides,
secrets from the environment or from files, --dump-config with every secret
masked, and configuration errors that name their source and stop the worker
before it connects to anything. (test_mapping.py has the first two checks of
a bad log level and of masked passwords; these go further.)"""
import os
import socket
import subprocess

import pytest

from nexus import ROOT, Worker, new_id, wait_until

MAPPING = os.path.join(ROOT, "schemas", "mapping.cfg")


def worker(name="tag"):
    return os.path.join(ROOT, "bin", f"{name}_worker")


def clean_env(**extra):
    """The environment without any NEXUS_* setting of the caller's shell or
    stack, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def dump(*args, env=None):
    return subprocess.run([worker(), *args, "--dump-config"], env=env or clean_env(),
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


class Listener:
    """A listening socket standing in for every server: a worker that
    connects anywhere leaves a connection in its accept queue."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def env(self):
        return {"NEXUS_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.port}",
                "NEXUS_NEO4J_URL": f"http://127.0.0.1:{self.port}",
                "NEXUS_PG_HOST": "127.0.0.1", "NEXUS_PG_PORT": str(self.port)}

    def accepted(self, timeout):
        """True when a connection arrives within timeout seconds."""
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except (socket.timeout, BlockingIOError):
            return False
        conn.close()
        return True

    def close(self):
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def write(path, text):
    path.write_text(text)
    return str(path)


BAD_CONFIGS = [
    # (file text or None, extra environment, expected message; {path} is the file)
    ('mapping = "%s";\nbatch = { max_events = 10; };\n\nneo4j = { url = ; };\n' % MAPPING, {},
     "{path}:4: syntax error"),
    ('mapping = "%s";\n\npostgres = { sslmode = "verify-everything"; };\n' % MAPPING, {},
     '{path}:3: unknown sslmode "verify-everything"'),
    ('mapping = "%s";\nkafka = ( ["bootstrap.servers"] );\n' % MAPPING, {},
     "{path}:2: kafka entries are"),
    ('mapping = "%s";\nkafka = (\n  ["client.rack", "r1"],\n  ["no.such.property", "1"]\n);\n'
     % MAPPING, {}, '{path}:4: kafka: No such configuration property: "no.such.property"'),
    ('mapping = "%s";\npostgres = { conninfo = "host=h password=hunter2"; };\n' % MAPPING, {},
     "{path}:2: postgres.conninfo holds a password"),
    ('mapping = "%s";\npostgres = { conninfo = "host=h colour=blue"; };\n' % MAPPING, {},
     '{path}:2: postgres.conninfo: invalid connection option "colour"'),
    ('mapping = "%s";\nneo4j = {\n  password_file = "/nonexistent/pw";\n};\n' % MAPPING, {},
     "{path}:3: could not read /nonexistent/pw"),
    (None, {"NEXUS_BATCH_MAX": "many"}, 'NEXUS_BATCH_MAX: "many" is not an integer from 1 to 100000000'),
    (None, {"NEXUS_NEO4J_PASSWORD_FILE": "/nonexistent/pw"},
     "NEXUS_NEO4J_PASSWORD_FILE: could not read /nonexistent/pw"),
    (None, {"NEXUS_WRITER_PASSWORD": "a", "NEXUS_WRITER_PASSWORD_FILE": "/etc/hostname"},
     "NEXUS_WRITER_PASSWORD and NEXUS_WRITER_PASSWORD_FILE are both set"),
    (None, {"NEXUS_NEO4J_CA_FILE": "/etc/hostname"}, "is set but the Neo4j url"),
    ('mapping = "%s";\nneo4j = {\n  api = "bolt";\n};\n' % MAPPING, {},
     '{path}:3: neo4j.api must be "auto", "query" (the Query API) or "tx" (the HTTP transactional '
     'API), not "bolt"'),
    ('mapping = "%s";\nneo4j = { api = 2; };\n' % MAPPING, {},
     '{path}:2: neo4j.api must be "auto", "query"'),
    (None, {"NEXUS_NEO4J_API": "Query"},
     'NEXUS_NEO4J_API: "Query" is not auto, query (the Query API) or tx (the HTTP transactional API)'),
]


@pytest.mark.parametrize("text,extra,message", BAD_CONFIGS,
                         ids=["syntax", "sslmode", "kafka-pair", "kafka-property", "conninfo-password", "conninfo-option",
                              "password-file", "env-int", "env-secret-file", "env-both",
                              "ca-without-https", "neo4j-api", "neo4j-api-not-a-string",
                              "env-neo4j-api"])
def test_config_error_names_its_source_and_exits_before_any_connection(
        tmp_path, listener, text, extra, message):
    args = []
    path = ""
    if text is not None:
        path = write(tmp_path / "worker.cfg", text)
        args = ["--config", path]
    env = clean_env(NEXUS_MAPPING=MAPPING, **listener.env(), **extra)
    p = subprocess.run([worker(), *args], env=env, capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert message.format(path=path) in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1, "one line, the reason: " + p.stderr
    assert not listener.accepted(0.5), "the worker connected before failing"


def test_the_listener_does_see_a_worker_that_starts(tmp_path, listener):
    """The control for the test above: a valid configuration with the same
    servers does connect, so 'no accept' there means something."""
    path = write(tmp_path / "worker.cfg", 'mapping = "%s";\n' % MAPPING)
    env = clean_env(NEXUS_MAPPING=MAPPING, NEXUS_NEO4J_PASSWORD="x", **listener.env())
    proc = subprocess.Popen([worker(), "--config", path], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        assert listener.accepted(30), "a starting worker never connected"
    finally:
        proc.kill()
        proc.wait()


def test_dump_config_masks_every_secret(tmp_path):
    secrets = {name: f"S3CRET-{name}-{new_id()[:6]}" for name in
               ("neo4j", "writer", "sasl", "sslkey", "keystore", "oauth", "pem", "filepg")}
    neo4j_file = write(tmp_path / "neo4j.pw", secrets["neo4j"] + "\n")
    sslkey_file = write(tmp_path / "sslkey.pw", secrets["sslkey"])
    pg_file = write(tmp_path / "pg.pw", secrets["filepg"] + "\n")
    cfg = write(tmp_path / "worker.cfg", f'''mapping = "{MAPPING}";
kafka = (
  ["bootstrap.servers", "127.0.0.1:1"],
  ["ssl.keystore.password", "{secrets['keystore']}"],
  ["sasl.oauthbearer.config", "{secrets['oauth']}"],
  ["ssl.key.pem", "{secrets['pem']}"]
);
postgres = {{ password_file = "{pg_file}"; }};
''')
    env = clean_env(NEXUS_NEO4J_PASSWORD_FILE=neo4j_file,
                    NEXUS_KAFKA_SASL_PASSWORD=secrets["sasl"],
                    NEXUS_KAFKA_SSL_KEY_PASSWORD_FILE=sslkey_file)
    p = dump("--config", cfg, env=env)
    assert p.returncode == 0, p.stderr
    for name, value in secrets.items():
        assert value not in p.stdout, f"{name} shows in --dump-config"
        assert value[:12] not in p.stdout + p.stderr
    for key in ("ssl.keystore.password", "sasl.oauthbearer.config", "ssl.key.pem",
                "sasl.password", "ssl.key.password"):
        assert f'"{key}" = "********";' in p.stdout, p.stdout
    assert 'password = "********"; timeout_ms' in p.stdout  # neo4j
    assert 'password = "********"; sslmode' in p.stdout     # postgres
    # the writer password from the environment wins over the file's, masked too
    p = dump("--config", cfg, env=dict(env, NEXUS_WRITER_PASSWORD=secrets["writer"]))
    assert p.returncode == 0 and secrets["writer"] not in p.stdout, p.stderr


def test_environment_beats_the_file(tmp_path):
    ca = write(tmp_path / "ca.crt", "not read here\n")
    cfg = write(tmp_path / "worker.cfg", f'''mapping = "{MAPPING}";
group_id = "from-file";
lanes = ["normal"];
batch = {{ max_events = 10; max_ms = 20; }};
log = {{ level = "warn"; }};
kafka = ( ["bootstrap.servers", "file-broker:9092"], ["client.rack", "r1"] );
neo4j = {{ url = "http://file-neo4j:7474"; database = "filedb"; }};
postgres = {{ conninfo = "host=file-pg port=1 dbname=filedb user=u"; sslmode = "require"; }};
''')
    p = dump("--config", cfg)
    assert p.returncode == 0, p.stderr
    for want in ('group_id = "from-file"', "max_events = 10;", 'level = "warn"',
                 '"bootstrap.servers" = "file-broker:9092"', 'url = "http://file-neo4j:7474"',
                 'conninfo = "host=file-pg port=1', 'sslmode = "require"'):
        assert want in p.stdout, (want, p.stdout)
    env = clean_env(NEXUS_GROUP_ID="from-env", NEXUS_BATCH_MAX="77", NEXUS_LOG_LEVEL="debug",
                    NEXUS_KAFKA_BOOTSTRAP="env-broker:9093", NEXUS_NEO4J_URL="https://env-neo4j:7473",
                    NEXUS_NEO4J_DB="envdb", NEXUS_PG_HOST="env-pg", NEXUS_PG_PORT="2",
                    NEXUS_PG_SSLMODE="verify-full", NEXUS_PG_SSLROOTCERT=ca,
                    NEXUS_NEO4J_CA_FILE=ca)
    p = dump("--config", cfg, env=env)
    assert p.returncode == 0, p.stderr
    for want in ('group_id = "from-env"', "max_events = 77; max_ms = 20;", 'level = "debug"',
                 '"bootstrap.servers" = "env-broker:9093"', '"client.rack" = "r1"',
                 'url = "https://env-neo4j:7473"; database = "envdb"',
                 # each NEXUS_PG_* sets its keyword; the file's others stay
                 # (before: rebuilt whole, dbname and user dropped)
                 "user='u' dbname='filedb' host='env-pg' port='2'",
                 'sslmode = "verify-full"', f'sslrootcert = "{ca}"', f'ca_file = "{ca}"'):
        assert want in p.stdout, (want, p.stdout)
    assert "file-broker" not in p.stdout and "file-neo4j" not in p.stdout


def test_neo4j_api_from_the_file_the_environment_and_its_default(tmp_path):
    """neo4j.api: auto by default, the file's value, NEXUS_NEO4J_API over
    the file; --dump-config shows the effective one."""
    p = dump(env=clean_env(NEXUS_MAPPING=MAPPING))
    assert p.returncode == 0 and 'api = "auto"; };' in p.stdout, p.stdout + p.stderr
    cfg = write(tmp_path / "worker.cfg", f'mapping = "{MAPPING}";\nneo4j = {{ api = "query"; }};\n')
    p = dump("--config", cfg)
    assert p.returncode == 0 and 'api = "query"; };' in p.stdout, p.stdout + p.stderr
    p = dump("--config", cfg, env=clean_env(NEXUS_NEO4J_API="tx"))
    assert p.returncode == 0 and 'api = "tx"; };' in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("content,reason", [("", "is empty"), ("x" * 300, "is longer than")],
                         ids=["empty", "too-long"])
def test_a_bad_secret_file_is_refused_not_cut(tmp_path, content, reason):
    pw = write(tmp_path / "pw", content)
    p = dump(env=clean_env(NEXUS_NEO4J_PASSWORD_FILE=pw))
    assert p.returncode == 2 and reason in p.stderr, p.stderr


@pytest.mark.parametrize("source", ["env", "file"])
def test_secrets_from_files_reach_the_servers(nx, project, tmp_path, source):
    """Both passwords only in files (NEXUS_*_PASSWORD_FILE, or the config's
    password_file): a worker still logs in to Neo4j and PostgreSQL and syncs
    a new row, write-back included."""
    neo4j_pw = write(tmp_path / "neo4j.pw", nx.env["NEXUS_NEO4J_PASSWORD"] + "\n")
    pg_pw = write(tmp_path / "pg.pw", nx.env["NEXUS_WRITER_PASSWORD"] + "\n")
    os.chmod(neo4j_pw, 0o600)
    os.chmod(pg_pw, 0o600)
    env = nx.worker_env(NEXUS_GROUP_ID=f"cfg-secret-{new_id()[:8]}")
    for name in ("NEXUS_NEO4J_PASSWORD", "NEXUS_WRITER_PASSWORD"):
        env.pop(name, None)
        env.pop(name + "_FILE", None)
    args = []
    if source == "env":
        env.update(NEXUS_NEO4J_PASSWORD_FILE=neo4j_pw, NEXUS_WRITER_PASSWORD_FILE=pg_pw)
    else:
        args = ["--config", write(tmp_path / "worker.cfg",
                                  f'neo4j = {{ password_file = "{neo4j_pw}"; }};\n'
                                  f'postgres = {{ password_file = "{pg_pw}"; }};\n')]
    tid = new_id()
    nx.psql(f"INSERT INTO tags (id, project_id, tenant_id, name) VALUES "
            f"('{tid}', '{project['project']}', '{project['tenant']}', 'secret-{source}')")
    w = Worker(nx, "tag", str(tmp_path / "w"), env["NEXUS_GROUP_ID"])
    w.proc = subprocess.Popen([worker(), *args], env=dict(env, NEXUS_STATS_DIR=w.dir),
                              stdout=open(w.log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_until(lambda: nx.scalar(f"SELECT sync_status FROM tags WHERE id = '{tid}'") == "SUCCESS",
                   180, 0.5, "the row synced and written back")
        assert nx.cypher_value("MATCH (t:Tag {id: $id}) RETURN count(t)", {"id": tid}) == 1
    finally:
        assert w.stop() == 0, w.log_text()[-3000:]


def test_source_epochs_and_marker_horizon(tmp_path):
    """source.epochs from the file or NEXUS_SOURCE_EPOCHS (ISO-8601 or
    epoch ms, ascending), tombstones.* likewise; a bad value names its
    source and stops the worker."""
    cfg = tmp_path / "w.cfg"
    cfg.write_text(f'mapping = "{MAPPING}";\nsource = {{ epochs = ["2026-12-01T00:00:00Z", '
                   f'"1800000000000"]; }};\ntombstones = {{ horizon_s = 0; prune_every_s = 5; }};\n')
    p = dump("--config", str(cfg))
    assert p.returncode == 0, p.stderr
    assert 'source = { epochs = ["1796083200000", "1800000000000"]; };' in p.stdout
    assert "tombstones = { horizon_s = 0; prune_every_s = 5; };" in p.stdout
    p = dump(env=clean_env(NEXUS_MAPPING=MAPPING, NEXUS_SOURCE_EPOCHS="1000,2000",
                           NEXUS_TOMBSTONE_HORIZON_S="60"))
    assert p.returncode == 0, p.stderr
    assert 'epochs = ["1000", "2000"]' in p.stdout and "horizon_s = 60;" in p.stdout
    p = dump(env=clean_env(NEXUS_MAPPING=MAPPING))
    assert "tombstones = { horizon_s = 604800; prune_every_s = 600; };" in p.stdout
    for bad in ("2000,1000", "yesterday", "2026-13-01"):
        p = dump(env=clean_env(NEXUS_MAPPING=MAPPING, NEXUS_SOURCE_EPOCHS=bad))
        assert p.returncode == 2 and "NEXUS_SOURCE_EPOCHS" in p.stderr, (bad, p.stderr)
    cfg.write_text(f'mapping = "{MAPPING}";\ntombstones = {{ horizon_s = -1; }};\n')
    p = dump("--config", str(cfg))
    assert p.returncode == 2 and f"{cfg}:2: tombstones.horizon_s must be an integer of at least 0" in p.stderr, p.stderr


@pytest.mark.parametrize("url,shown", [
    ("http://neo:{pw}@127.0.0.1:7474", "http://neo:********@127.0.0.1:7474"),
    ("https://neo:{pw}@db.example:7473/base", "https://neo:********@db.example:7473/base"),
    ("http://a@b:{pw}@127.0.0.1:7474", "http://a@b:********@127.0.0.1:7474"),
], ids=["http", "https-path", "at-in-user"])
def test_password_in_the_neo4j_url_is_masked(tmp_path, url, shown):
    """A password in the userinfo of the Neo4j url is never printed: not by
    --dump-config, not in the configuration error that quotes the url."""
    pw = f"S3CRET-{new_id()[:8]}"
    p = dump(env=clean_env(NEXUS_MAPPING=MAPPING, NEXUS_NEO4J_URL=url.format(pw=pw)))
    assert p.returncode == 0, p.stderr
    assert pw not in p.stdout + p.stderr, p.stdout
    assert f'url = "{shown}";' in p.stdout, p.stdout
    # the error naming a plain-http url quotes it masked
    ca = write(tmp_path / "ca.crt", "not read here\n")
    plain = url.replace("https://", "http://").format(pw=pw)
    p = subprocess.run([worker()], env=clean_env(NEXUS_MAPPING=MAPPING, NEXUS_NEO4J_URL=plain,
                                                 NEXUS_NEO4J_CA_FILE=ca),
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert pw not in p.stdout + p.stderr, p.stderr
    assert shown.replace("https://", "http://") in p.stderr, p.stderr


def test_byte_limits_and_poison_threshold(tmp_path):
    """batch.max_bytes, batch.backlog_max_bytes and retry.poison_after from
    the file or the environment, with their defaults; below the minimum
    names its source and stops the worker."""
    p = dump(env=clean_env(NEXUS_MAPPING=MAPPING))
    assert p.returncode == 0, p.stderr
    assert "max_bytes = 8388608; backlog_max_bytes = 8388608; };" in p.stdout, p.stdout
    assert "poison_after = 8; };" in p.stdout, p.stdout
    cfg = tmp_path / "w.cfg"
    cfg.write_text(f'mapping = "{MAPPING}";\nbatch = {{ max_bytes = 65536; backlog_max_bytes = 131072; }};\n'
                   f'retry = {{ poison_after = 3; }};\n')
    p = dump("--config", str(cfg))
    assert p.returncode == 0, p.stderr
    assert "max_bytes = 65536; backlog_max_bytes = 131072; };" in p.stdout, p.stdout
    assert "poison_after = 3; };" in p.stdout, p.stdout
    p = dump("--config", str(cfg), env=clean_env(NEXUS_BATCH_MAX_BYTES="2048", NEXUS_BACKLOG_MAX_BYTES="4096",
                                                 NEXUS_RETRY_POISON_AFTER="2"))
    assert p.returncode == 0, p.stderr
    assert "max_bytes = 2048; backlog_max_bytes = 4096; };" in p.stdout and "poison_after = 2; };" in p.stdout
    cfg.write_text(f'mapping = "{MAPPING}";\nbatch = {{ max_bytes = 100; }};\n')
    p = dump("--config", str(cfg))
    assert p.returncode == 2 and f"{cfg}:2: batch.max_bytes must be an integer of at least 1024" in p.stderr, p.stderr
    p = dump(env=clean_env(NEXUS_MAPPING=MAPPING, NEXUS_RETRY_POISON_AFTER="0"))
    assert p.returncode == 2 and "NEXUS_RETRY_POISON_AFTER" in p.stderr, p.stderr


def test_stats_dir_is_a_setting_of_the_file_and_the_environment(tmp_path):
    """metrics.stats_dir, overridden by NEXUS_STATS_DIR like every other
    setting (before: only the variable, read outside struct config)."""
    cfg = write(tmp_path / "w.cfg", f'mapping = "{MAPPING}";\nmetrics = {{ stats_dir = "/from/file"; }};\n')
    p = dump("--config", cfg)
    assert p.returncode == 0 and 'stats_dir = "/from/file"' in p.stdout, p.stdout + p.stderr
    p = dump("--config", cfg, env=clean_env(NEXUS_STATS_DIR="/from/env"))
    assert p.returncode == 0 and 'stats_dir = "/from/env"' in p.stdout, p.stdout + p.stderr
    p = dump(env=clean_env(NEXUS_STATS_DIR="x" * 300))
    assert p.returncode == 2 and "NEXUS_STATS_DIR is longer than" in p.stderr, p.stderr
