"""The container files users deploy with: the compose file parses and wires
every worker, and the image builds what the workers need."""
import os
import shutil
import subprocess
import tempfile

import pytest

from nexus import ROOT  # noqa: E402 (the one definition)


# The secrets the compose file needs, without defaults.
SECRETS = ("NEO4J_PASSWORD", "WRITER_PASSWORD", "PG_ADMIN_PASSWORD", "CDC_PASSWORD")
# an empty env file in place of the project's .env (docker-compose wants a file)
EMPTY_ENV_FILE = tempfile.NamedTemporaryFile(prefix="nexus-empty-", suffix=".env")


def compose(*args, secrets=None):
    """docker-compose on the compose file, with an empty env file (a user's
    .env cannot leak in) and secrets (default: each set to a test value) as
    the only password variables of the environment."""
    exe = shutil.which("docker-compose")
    if not exe:
        pytest.fail("docker-compose (Debian package) is missing: tests/run installs it")
    if secrets is None:
        secrets = {name: f"test-{name.lower()}" for name in SECRETS}
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update(secrets)
    return subprocess.run([exe, "-f", os.path.join(ROOT, "docker-compose.yml"),
                           "--env-file", EMPTY_ENV_FILE.name, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)


def test_compose_file_is_valid():
    p = compose("config", "-q")
    assert p.returncode == 0, p.stderr


def test_compose_uses_the_secrets_it_is_given():
    p = compose("config")
    assert p.returncode == 0, p.stderr
    for name in SECRETS:
        assert f"test-{name.lower()}" in p.stdout, name
    assert "change-me" not in p.stdout


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_a_missing_secret(missing):
    """No fallback password: without one secret, compose stops and names it
    (an empty value counts as missing)."""
    for value in (None, ""):
        secrets = {name: f"test-{name.lower()}" for name in SECRETS if name != missing}
        if value is not None:
            secrets[missing] = value
        p = compose("config", "-q", secrets=secrets)
        assert p.returncode != 0, f"compose accepted a missing {missing}"
        assert f"set {missing} in .env or the environment" in p.stderr, p.stderr


def test_compose_runs_every_worker_of_the_mapping():
    services = compose("config", "--services").stdout.split()
    workers = subprocess.run([os.path.join(ROOT, "bin", "nexus-schema"), "workers"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    for w in workers:
        assert f"{w}_worker" in services
    for s in ("postgres", "kafka", "connect", "neo4j", "nexus-init"):
        assert s in services


def test_dockerfile_builds_every_worker_and_runs_as_non_root():
    text = open(os.path.join(ROOT, "deploy", "docker", "Dockerfile")).read()
    workers = subprocess.run([os.path.join(ROOT, "bin", "nexus-schema"), "workers"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    for w in workers:
        assert f"bin/{w}_worker" in text
    assert "USER 10001" in text and "FROM debian:bookworm-slim" in text


def compose_config():
    """The compose file as docker-compose resolves it (anchors merged), read
    with the PyYAML that tests/run installs into .cache/python."""
    import sys
    pydeps = os.path.join(ROOT, ".cache", "python")
    if not os.path.isdir(os.path.join(pydeps, "yaml")):
        pytest.fail("PyYAML is missing from .cache/python: tests/run installs it")
    if pydeps not in sys.path:
        sys.path.insert(0, pydeps)
    import yaml
    p = compose("config")
    assert p.returncode == 0, p.stderr
    return yaml.safe_load(p.stdout)


def test_workers_scale_with_compose():
    """`--scale` needs workers without a fixed container name or host port
    (their metrics port is only exposed to the compose network)."""
    cfg = compose_config()
    workers = subprocess.run([os.path.join(ROOT, "bin", "nexus-schema"), "workers"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    for w in workers:
        svc = cfg["services"][f"{w}_worker"]
        assert "container_name" not in svc, w
        assert not svc.get("ports"), f"{w}_worker publishes a host port: {svc['ports']}"
        assert svc["command"] == [f"{w}_worker"]
        assert svc["depends_on"]["nexus-init"]["condition"] == "service_completed_successfully"


def test_init_job_has_psql_and_the_image_has_the_tools():
    """nexus-init runs deploy/docker/init.sh, which needs psql: it builds the
    Dockerfile's init target; the workers' default target has every tool."""
    cfg = compose_config()
    init = cfg["services"]["nexus-init"]
    assert init["build"]["target"] == "init"
    text = open(os.path.join(ROOT, "deploy", "docker", "Dockerfile")).read()
    stages = [line.split() for line in text.splitlines() if line.startswith("FROM ")]
    assert stages[-1] == ["FROM", "runtime"], "the last stage (the default target) must be the runtime"
    assert ["FROM", "runtime", "AS", "init"] in stages
    init_stage = text.split("AS init", 1)[1].split("\nFROM ", 1)[0]
    assert "postgresql-client" in init_stage and "USER 10001" in init_stage
    assert "psql" in open(os.path.join(ROOT, "deploy", "docker", "init.sh")).read()
    for tool in os.listdir(os.path.join(ROOT, "tools")):
        if tool.endswith(".c"):
            assert f"bin/{tool[:-2]}" in text, f"the image does not build {tool[:-2]}"
