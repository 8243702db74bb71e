"""The PostgreSQL write-back (common/pgstatus.c) under a stalled
connection, a failover to a read-only server, a missing grant and a key
that is not a uuid, driven through tests/clients/pgstatus_client against
the real stack.

Each case failed before pgstatus.c bounded its waits (keepalives,
tcp_user_timeout, a poll deadline on every result), classified 25006 and
42501 as transient and checked keys before the ::uuid[] cast."""

import re
import subprocess
import threading
import uuid

from nexus import Proxy
from test_clients import (clients, link, nx, pg_driver, pg_rows, tenant,  # noqa: F401 (fixtures)
                          )

# the result bound the tests give the writer (ms); the default is 30 s
BOUND_MS = 1500


class StallProxy(Proxy):
    """A loopback forwarder that can stall: bytes are still read (so TCP
    acknowledges them and keepalive probes are answered) but no longer
    forwarded, and no socket is closed. The client sees a half-open
    connection to a server that never answers."""

    def __init__(self, target_port):
        self.stalled = threading.Event()
        super().__init__(target_port)

    def stall(self):
        self.stalled.set()

    def unstall(self):
        self.stalled.clear()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self.stalled.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def fail_row(ids, k="tenant", error="e"):
    return {"table": "tenants", "outcome": "FAILED", "keys": [ids[k]], "error": error}


def test_pg_stalled_connection_returns_transient_within_the_bound(clients, nx, pg_rows):
    """A server that stops answering on an open connection (nothing closed,
    every byte acknowledged) makes the write-back return TRANSIENT once the
    result bound passes, instead of blocking the worker; nothing was
    written, and the next write connects again and lands. Before: the wait
    blocked in PQgetResult for good (no answer to the request)."""
    ids = pg_rows
    proxy = StallProxy(nx.env["NEXUS_PG_PORT"])
    d = pg_driver(clients, nx.env, port=proxy.port)
    try:
        ans = d.ask({"timeout_ms": BOUND_MS, "rows": [fail_row(ids)]})
        assert ans["err"] == "ok", ans
        assert tenant(nx, ids)["sync_attempts"] == 1
        proxy.stall()
        ans = d.ask({"rows": [fail_row(ids)]}, timeout=60)
        assert ans["err"] == "pg_transient", ans
        assert "no answer from PostgreSQL" in ans["errstr"], ans
        assert ans["ms"] >= BOUND_MS, ans
        assert tenant(nx, ids)["sync_attempts"] == 1, "the stalled UPDATE reached the server"
        # the pipelined half is bounded the same way
        ans = d.ask({"hold_ms": 0, "rows": [fail_row(ids)]}, timeout=60)
        assert ans["err"] == "pg_transient", ans
        proxy.unstall()
        ans = d.ask({"rows": [fail_row(ids)]})
        assert ans["err"] == "ok", ans
        assert tenant(nx, ids)["sync_attempts"] == 2
    finally:
        proxy.unstall()
        d.close()
        proxy.close()


def keepalive_seconds(ss_line):
    """The keepalive timer of one `ss -o` line, in seconds, or None."""
    m = re.search(r"timer:\(keepalive,(?:(\d+)min)?(?:([\d.]+)sec)?(?:(\d+)ms)?", ss_line)
    if not m:
        return None
    mins, secs, ms = m.groups()
    return int(mins or 0) * 60 + float(secs or 0) + int(ms or 0) / 1000


def test_pg_connection_has_short_tcp_keepalive(clients, nx, pg_rows):
    """The writer's idle socket is probed by keepalives after seconds, not
    after the kernel's default two hours (ss shows the keepalive timer), so
    a peer that vanished without a FIN is found quickly. Before: libpq's
    default keepalive with the system idle time, a timer of ~120 min."""
    ids = pg_rows
    proxy = StallProxy(nx.env["NEXUS_PG_PORT"])
    d = pg_driver(clients, nx.env, port=proxy.port)
    try:
        assert d.ask({"rows": [fail_row(ids)]})["err"] == "ok"
        out = subprocess.run(["ss", "-tnoH", "state", "established", "dst",
                              f"127.0.0.1:{proxy.port}"], capture_output=True, text=True,
                             check=True).stdout
        assert out.strip(), "no connection of the writer through the proxy"
        left = keepalive_seconds(out)
        assert left is not None, out
        assert left <= 10, f"first keepalive probe only after {left} s: {out}"
    finally:
        d.close()
        proxy.close()


def test_pg_missing_grant_is_transient_and_lands_once_granted(clients, nx, pg_rows):
    """A missing UPDATE grant (42501) is retried, not dropped as permanent:
    the write-back returns TRANSIENT with nothing written, and the same
    write lands once the grant is back. Before: PERMANENT, so the consumer
    dropped the bookkeeping and committed the offsets."""
    ids = pg_rows
    writer = nx.env["NEXUS_WRITER_USER"]
    d = pg_driver(clients, nx.env)
    nx.psql(f"REVOKE UPDATE (sync_status) ON tenants FROM {writer}")
    try:
        ans = d.ask({"rows": [fail_row(ids, error="no grant")]})
        assert ans["err"] == "pg_transient", ans
        assert "42501" in ans["errstr"], ans
        assert tenant(nx, ids)["sync_status"] == "PENDING"
        nx.psql(f"GRANT UPDATE (sync_status) ON tenants TO {writer}")
        ans = d.ask({"rows": [fail_row(ids, error="no grant")]})
        assert ans["err"] == "ok", ans
        t = tenant(nx, ids)
        assert (t["sync_status"], t["sync_attempts"], t["last_sync_error"]) == ("FAILED", 1, "no grant")
    finally:
        nx.psql(f"GRANT UPDATE (sync_status) ON tenants TO {writer}")
        d.close()


def test_pg_read_only_server_is_transient_and_reconnects(clients, nx, pg_rows):
    """A session on a read-only server (25006, what a write-back sees after
    a failover) is TRANSIENT, and the writer drops that session: once the
    server is writable the next write opens a new one and lands. Before:
    PERMANENT."""
    ids = pg_rows
    writer = nx.env["NEXUS_WRITER_USER"]
    nx.psql(f"ALTER ROLE {writer} SET default_transaction_read_only = on")
    d = pg_driver(clients, nx.env)
    try:
        ans = d.ask({"rows": [fail_row(ids, error="read only")]})
        assert ans["err"] == "pg_transient", ans
        assert "25006" in ans["errstr"], ans
        assert tenant(nx, ids)["sync_status"] == "PENDING"
        nx.psql(f"ALTER ROLE {writer} RESET default_transaction_read_only")
        ans = d.ask({"rows": [fail_row(ids, error="read only")]})
        assert ans["err"] == "ok", ans
        assert tenant(nx, ids)["sync_attempts"] == 1
    finally:
        nx.psql(f"ALTER ROLE {writer} RESET default_transaction_read_only")
        d.close()


def test_pg_non_uuid_key_is_left_out_and_the_rest_is_written(clients, nx, pg_rows):
    """A key that is not a uuid no longer fails the whole transaction: that
    row is left out with a warning naming table and key, the other rows
    (other table, same table, a uuid in braces and upper case, which
    PostgreSQL accepts) are written. A batch of bad keys only writes
    nothing. Before: 22P02, PERMANENT, nothing written."""
    ids = pg_rows
    l0 = link(nx, ids)
    d = pg_driver(clients, nx.env)
    try:
        ans = d.ask({"rows": [
            fail_row(ids),
            {"table": "thread_content", "outcome": "FAILED", "keys": [ids["thread"], "not-a-uuid"],
             "error": "y"},
            {"table": "thread_content", "outcome": "FAILED", "keys": [ids["thread"], ids["content2"]],
             "error": "z"},
            {"table": "tenants", "outcome": "FAILED", "keys": ["{%s}" % ids["tenant2"].upper()],
             "error": "braced"},
        ]})
        assert ans["err"] == "ok", ans
        assert tenant(nx, ids)["sync_status"] == "FAILED"
        assert tenant(nx, ids, "tenant2")["last_sync_error"] == "braced"
        assert link(nx, ids, "content2")["last_sync_error"] == "z"
        assert link(nx, ids) == l0
        ans = d.ask({"rows": [{"table": "tenants", "outcome": "SUCCESS", "keys": [ids["tenant"] + "x"],
                               "version": 1}]})
        assert ans["err"] == "ok", ans
        assert tenant(nx, ids)["sync_status"] == "FAILED"
    finally:
        err = d.close()
    assert "thread_content" in err and "not-a-uuid" in err, err
    assert ids["tenant"] + "x" in err, err
