"""Shared pytest fixtures: the local stack (deploy/local/stack) that every
real-server test uses. Standard library only besides pytest.

`stack` starts the stack once per session, or reuses the one already
running, and returns the settings of its env file as a dict
(NEXUS_PG_PORT, NEXUS_NEO4J_PASSWORD, ...). The stack is left running: a
later test or the next session reuses it; tests/run stops a stack it
started itself.

Tests marked `stack_last` restart the shared stack; they are moved behind
every other test of the session so nothing else sees the restart.

Stack-free tests are marked `check`: a test is stack-free when it does not
use the `stack` fixture (directly or through `nx`, `project`, ...) and is
not in test_stack.py (which drives deploy/local/stack itself). `make check`
runs `-m check`; tests/run then runs the rest with `--no-check` (which
deselects them). Under `make check` (NEXUS_CHECK_SKIP_MISSING=1) a check
whose outside tool is missing is skipped with the reason instead of failing;
tests/run installs the tools and leaves that off."""
import os
import shlex
import shutil
import subprocess

import pytest

from nexus import ROOT  # noqa: E402 (the one definition)
STACK_SCRIPT = os.path.join(ROOT, "deploy", "local", "stack")
UP_TIMEOUT = 900


def run_stack(*args, env=None, timeout=UP_TIMEOUT):
    """Run deploy/local/stack ARGS; returns the CompletedProcess (text)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run(["bash", STACK_SCRIPT, *args], env=e, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def read_env_file(path):
    """The `export NAME='value'` lines of a stack env file, as a dict."""
    settings = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                name, value = words[1].split("=", 1)
                settings[name] = value
    return settings


def stack_dir(env=None):
    e = env if env is not None else os.environ
    return os.path.abspath(e.get("NEXUS_STACK_DIR") or os.path.join(ROOT, ".stack"))


def stack_up(env=None):
    """`stack up` (reuses what runs); fails the calling test with the output
    of the script when the stack cannot be brought up."""
    p = run_stack("up", env=env)
    if p.returncode != 0:
        pytest.fail(f"deploy/local/stack up failed (exit {p.returncode}):\n{p.stderr[-6000:]}",
                    pytrace=False)
    merged = dict(os.environ)
    merged.update(env or {})
    return read_env_file(os.path.join(stack_dir(merged), "env"))


# Test files that need no `stack` fixture but start servers themselves.
STACK_MODULES = {"test_stack.py"}
def have_yaml():
    return os.path.isdir(os.path.join(ROOT, ".cache", "python", "yaml"))


# Outside tools of stack-free checks: nodeid prefix -> [(what, present?)].
# tests/run installs them (Debian packages, kubernetes-validate from PyPI).
CHECK_TOOLS = {
    "tests/test_deploy.py": [("docker-compose", lambda: shutil.which("docker-compose"))],
    "tests/test_deploy.py::test_workers_scale_with_compose": [("PyYAML in .cache/python", have_yaml)],
    "tests/test_deploy.py::test_init_job_has_psql": [("PyYAML in .cache/python", have_yaml)],
    "tests/test_k8s.py": [("kubectl", lambda: shutil.which("kubectl")),
                          ("kubernetes-validate in .cache/python",
                           lambda: os.path.isdir(os.path.join(ROOT, ".cache", "python",
                                                              "kubernetes_validate")))],
    "tests/test_metrics.py::test_promtool": [("promtool", lambda: shutil.which("promtool"))],
}


def pytest_addoption(parser):
    parser.addoption("--no-check", action="store_true",
                     help="deselect the stack-free tests (marked check): make check ran them")


def pytest_configure(config):
    config.addinivalue_line("markers", "stack_last: restarts or resets the shared stack; runs last")
    config.addinivalue_line("markers", "slow: a heavy test (minutes); `-m 'not slow'` leaves it out")
    config.addinivalue_line("markers", "check: needs no server (set by conftest.py); `make check` runs these")


def is_stack_free(item):
    return ("stack" not in getattr(item, "fixturenames", ())
            and os.path.basename(str(item.fspath)) not in STACK_MODULES)


def mark_checks(config, items):
    """Mark the stack-free tests `check`; drop them under --no-check; under
    make check, skip those whose outside tool is missing."""
    skip_missing = os.environ.get("NEXUS_CHECK_SKIP_MISSING") == "1"
    kept, dropped = [], []
    for item in items:
        if not is_stack_free(item):
            kept.append(item)
            continue
        item.add_marker(pytest.mark.check)
        if config.getoption("--no-check"):
            dropped.append(item)
            continue
        kept.append(item)
        if not skip_missing:
            continue
        path = os.path.relpath(str(item.fspath), ROOT).replace(os.sep, "/")
        nodeid = path + item.nodeid[item.nodeid.index("::"):]
        for prefix, tools in CHECK_TOOLS.items():
            if nodeid.startswith(prefix):
                missing = [what for what, present in tools if not present()]
                if missing:
                    item.add_marker(pytest.mark.skip(
                        reason=f"{', '.join(missing)} missing (tests/run installs it)"))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Stack-free tests are marked `check` (mark_checks). Slow tests that
    rebuild shared state (the connector, the whole graph)
    run after every other test, so no other test sees their traffic; the
    stack_last ones (restarts, a wiped graph) after those (stable order)."""
    mark_checks(config, items)

    def rank(item):
        if item.get_closest_marker("stack_last") is not None:
            return 2
        return 1 if item.get_closest_marker("slow") is not None else 0
    items.sort(key=rank)


@pytest.fixture(scope="session")
def stack():
    return stack_up()



@pytest.fixture(autouse=True)
def _stop_tracked_workers():
    """A failing test must not leave the workers it tracked running."""
    yield
    from nexus import stop_tracked
    stop_tracked()


@pytest.fixture(scope="module")
def nx(stack):
    """The stack's servers, through tests/nexus.py's helpers."""
    from nexus import Stack
    return Stack(stack)


@pytest.fixture(scope="module")
def project(nx):
    """A tenant, program and project of the module's own, for its rows."""
    from nexus import new_id
    t, pg, p = new_id(), new_id(), new_id()
    nx.psql(f"""INSERT INTO tenants (id, name, slug) VALUES ('{t}', 'test', 'test-{t[:8]}');
    INSERT INTO programs (id, tenant_id, name) VALUES ('{pg}', '{t}', 'p');
    INSERT INTO projects (id, program_id, tenant_id, name) VALUES ('{p}', '{pg}', '{t}', 'p');""")
    return {"tenant": t, "program": pg, "project": p}
