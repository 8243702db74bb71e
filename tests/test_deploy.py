"""The container files users deploy with: the compose file parses and wires
every worker, and the image builds what the workers need."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compose(*args):
    exe = shutil.which("docker-compose")
    if not exe:
        pytest.fail("docker-compose (Debian package) is missing: tests/run installs it")
    return subprocess.run([exe, "-f", os.path.join(ROOT, "docker-compose.yml"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_compose_file_is_valid():
    p = compose("config", "-q")
    assert p.returncode == 0, p.stderr


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
