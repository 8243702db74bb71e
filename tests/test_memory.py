"""Memory safety of the workers on the real workload:
  - a worker under valgrind (memcheck, full leak check) applies real
    changes, writes them back, and stops on SIGTERM with no error and no
    byte definitely (or indirectly) lost; what librdkafka and libcurl keep
    "still reachable" at exit is not reported;
  - the end-to-end tests (tests/test_sync_e2e.py) pass again with the
    ASan/UBSan build of every worker (`make asan`, build/asan/bin), with
    leak detection on and no sanitizer report in any worker log.

NEXUS_MEMORY_E2E lists the test files of the second run (default
tests/test_sync_e2e.py); `make chaos` time is not needed for either.
"""
import glob
import os
import re
import subprocess
import sys
import uuid

from nexus import ROOT, Worker, wait_until

SUPP = os.path.join(ROOT, "tests", "clients", "valgrind.supp")
ASAN_BIN = os.path.join(ROOT, "build", "asan", "bin")
SAN_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
               "SUMMARY: UndefinedBehaviorSanitizer")


class ValgrindWorker(Worker):
    """A Worker run under valgrind; its report goes to valgrind.log."""

    def start(self, **extra):
        self.vg_log = os.path.join(self.dir, "valgrind.log")
        env = dict(self.env)
        env.update(extra)
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            ["valgrind", "--error-exitcode=99", "--leak-check=full",
             "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
             "--track-fds=no", f"--suppressions={SUPP}", f"--log-file={self.vg_log}",
             os.path.join(ROOT, "bin", f"{self.name}_worker")],
            env=self.nx.worker_env(NEXUS_GROUP_ID=self.group, NEXUS_STATS_DIR=self.dir, **env),
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        return self


def test_worker_under_valgrind_is_clean(nx, project, tmp_path):
    group = f"valgrind-{uuid.uuid4().hex[:8]}"
    # the group starts at the topic's end: valgrind makes replaying the
    # whole history slow, and only this test's changes matter here
    subprocess.run(["make", "-s", "-C", ROOT, "clients"], check=True)
    p = subprocess.run([os.path.join(ROOT, "build", "tests", "clients", "kafka_admin"),
                        nx.env["NEXUS_KAFKA_BOOTSTRAP"], "commit-end", group, "nexus.normal.tag"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    w = ValgrindWorker(nx, "tag", str(tmp_path / "vg"), group, NEXUS_BATCH_MS=200)
    w.start()
    try:
        tags = [str(uuid.uuid4()) for _ in range(40)]
        nx.psql("INSERT INTO tags (id, project_id, tenant_id, name) VALUES " + ", ".join(
            f"('{t}', '{project['project']}', '{project['tenant']}', 'vg-{k}')" for k, t in enumerate(tags)))
        nx.psql(f"UPDATE tags SET color = 'red' WHERE id IN ({', '.join(repr(t) for t in tags[:20])})")
        nx.psql(f"DELETE FROM tags WHERE id IN ({', '.join(repr(t) for t in tags[30:])})")
        live = tags[:30]
        wait_until(lambda: nx.cypher_value("MATCH (t:Tag) WHERE t.id IN $ids AND t.srcLsn IS NOT NULL "
                                           "RETURN count(t)", {"ids": live}) == 30 and
                   nx.cypher_value("MATCH (t:Tag) WHERE t.id IN $ids RETURN count(t)", {"ids": tags[30:]}) == 0 and
                   nx.cypher_value("MATCH (t:Tag {color: 'red'}) WHERE t.id IN $ids RETURN count(t)",
                                   {"ids": tags[:20]}) == 20,
                   600, interval=1, what="changes applied by the worker under valgrind")
        wait_until(lambda: nx.scalar("SELECT count(*) FROM tags WHERE sync_status = 'SUCCESS' AND id IN (" +
                                     ", ".join(repr(t) for t in live) + ")") == "30",
                   300, interval=1, what="write-back under valgrind")
        assert w.proc.poll() is None
    finally:
        rc = w.stop_slow()
    report = open(w.vg_log).read()
    assert rc == 0, f"tag_worker under valgrind exited {rc}:\n{report[-6000:]}\n{w.log_text()[-2000:]}"
    assert re.search(r"ERROR SUMMARY: 0 errors", report), report[-6000:]
    m = re.search(r"definitely lost: ([\d,]+) bytes", report)
    assert m is None or m.group(1) == "0", report[-6000:]
    m = re.search(r"indirectly lost: ([\d,]+) bytes", report)
    assert m is None or m.group(1) == "0", report[-6000:]


def _stop_slow(self, timeout=300):
    """SIGTERM, with the time valgrind needs for its leak check."""
    import signal
    if self.proc.poll() is None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
    return self.proc.returncode


ValgrindWorker.stop_slow = _stop_slow


def test_e2e_with_asan_workers(nx, tmp_path):
    """tests/test_sync_e2e.py again, every worker built with ASan/UBSan."""
    p = subprocess.run(["make", f"-j{os.cpu_count() or 1}", "asan"], cwd=ROOT, capture_output=True, text=True,
                       timeout=1800)
    assert p.returncode == 0, f"make asan failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
    workers = glob.glob(os.path.join(ASAN_BIN, "*_worker"))
    assert len(workers) == 5, workers
    files = os.environ.get("NEXUS_MEMORY_E2E", "tests/test_sync_e2e.py").split()
    env = dict(os.environ)
    env.update(nx.env)
    env.update(NEXUS_WORKER_BIN_DIR=ASAN_BIN, NEXUS_TEST_TIME_SCALE="4",
               ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=86",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
               LSAN_OPTIONS=f"suppressions={os.path.join(ROOT, 'tests', 'lsan-workers.supp')}")
    base = tmp_path / "e2e"
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
                        f"--basetemp={base}", *files], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1800)
    logs = glob.glob(str(base / "**" / "*.log"), recursive=True)
    found = {l: t for l in logs for t in [open(l, errors="replace").read()] if any(s in t for s in SAN_MARKERS)}
    assert p.returncode == 0, f"e2e with ASan workers failed:\n{p.stdout[-5000:]}\n" + \
        "\n".join(f"--- {l}\n{t[-3000:]}" for l, t in found.items())
    assert logs, "no worker logs found"
    assert not found, "sanitizer reports:\n" + "\n".join(f"--- {l}\n{t[-3000:]}" for l, t in found.items())
    assert re.search(r"\d+ passed", p.stdout) and " failed" not in p.stdout, p.stdout[-2000:]
