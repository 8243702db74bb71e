"""An HTTP fault proxy on loopback, for conditions a real server cannot be
made to produce on demand (a Neo4j deadlock, a cluster leader switch).

It listens on an ephemeral port and forwards every request to the target
(HTTP/1.1, keep-alive, bodies by Content-Length), except the requests that
match a rule: those are answered by the proxy and never reach the target,
so nothing they asked for is committed. A rule is (method, path regex,
count, status, body or Neo4j error code, and optionally a regex the
request body must match); it answers the next count
matching requests (count None: every one until cleared) and then stands
aside. answer_headers are added to every forwarded answer (a header only
a hosted Neo4j sends, such as Aura's neo4j-cluster-affinity);
request_headers records what each request carried. Standard library only.

    proxy = FaultProxy(nx.env["NEXUS_NEO4J_URL"])
    rule = proxy.add_rule("POST", r"^/db/[^/]+/tx/commit$", 3,
                          code="Neo.TransientError.Transaction.DeadlockDetected")
    ... worker with NEXUS_NEO4J_URL=proxy.url ...
    wait_until(lambda: rule.served == 3)
    proxy.close()
"""
import http.client
import http.server
import json
import re
import threading
import time
import urllib.parse

# Hop-by-hop headers (RFC 9110 7.6.1): not forwarded, the proxy sets its own.
# Expect: the proxy answers 100-continue itself (BaseHTTPRequestHandler).
HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
       "content-length", "expect"}


def neo4j_error_body(code, message="injected by tests/faultproxy.py"):
    """The body Neo4j's HTTP API answers a failed transaction with (HTTP 200,
    as a real SyntaxError or DeadlockDetected comes back)."""
    doc = {"results": [], "errors": [{"code": code, "message": message}]}
    return json.dumps(doc, separators=(",", ":")).encode()


class Rule:
    """Answer the next count requests whose method is method, whose path
    (without the query) matches path and, when match_body is given, whose
    body matches that regex, with status and body. served counts the
    requests answered so far."""

    def __init__(self, method, path, count, status=200, body=None, code=None,
                 content_type="application/json", match_body=None):
        if (body is None) == (code is None):
            raise ValueError("give a body or a Neo4j error code, not both")
        self.method, self.path, self.count = method.upper(), re.compile(path), count
        self.status, self.content_type = status, content_type
        self.body = neo4j_error_body(code) if code is not None else \
            (body.encode() if isinstance(body, str) else body)
        self.match_body = re.compile(match_body.encode()) if match_body else None
        self.served = 0

    def matches(self, method, path, body):
        return method == self.method and self.path.search(path) is not None and \
            (self.match_body is None or self.match_body.search(body) is not None) and \
            (self.count is None or self.served < self.count)


class FaultProxy:
    def __init__(self, target_url):
        u = urllib.parse.urlsplit(target_url)
        if u.scheme != "http":
            raise ValueError("the fault proxy forwards plain http only")
        self.target = (u.hostname, u.port or 80)
        self.rules = []
        self.lock = threading.Lock()
        self.log = []  # (method, path, status, "injected" | "forwarded")
        self.forward_delay_s = 0.0  # a slow server: wait this long before forwarding
        self.answer_headers = []  # (name, value) added to every forwarded answer
        self.request_headers = []  # (method, path, {header: value}) of every request
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlsplit(self.path).path
                with proxy.lock:
                    proxy.request_headers.append((self.command, path, dict(self.headers.items())))
                rule = proxy._take(self.command, path, body)
                if rule is not None:
                    self._answer(rule.status, [("Content-Type", rule.content_type)], rule.body)
                    proxy._note(self.command, path, rule.status, "injected")
                    return
                if proxy.forward_delay_s:
                    time.sleep(proxy.forward_delay_s)
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                self._answer(status, list(headers) + list(proxy.answer_headers), data)
                proxy._note(self.command, path, status, "forwarded")

            def _answer(self, status, headers, data):
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add_rule(self, method, path, count, status=200, body=None, code=None, **kw):
        """Add a rule (see Rule) after the ones already there; returns it."""
        rule = Rule(method, path, count, status, body, code, **kw)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self):
        with self.lock:
            self.rules = []

    def injected(self):
        with self.lock:
            return sum(1 for e in self.log if e[3] == "injected")

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _take(self, method, path, body):
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path, body):
                    rule.served += 1
                    return rule
        return None

    def _note(self, method, path, status, how):
        with self.lock:
            self.log.append((method, path, status, how))

    def _forward(self, method, target, headers, body):
        """One request to the target on a fresh connection; (status,
        headers, body) of its answer, or 502 when it cannot be reached."""
        conn = http.client.HTTPConnection(*self.target, timeout=120)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in HOP}
            fwd["Content-Length"] = str(len(body))
            conn.request(method, target, body=body if body or method in ("POST", "PUT", "PATCH") else None,
                         headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        except OSError as e:
            return 502, [("Content-Type", "text/plain")], f"fault proxy: {e}".encode()
        finally:
            conn.close()
