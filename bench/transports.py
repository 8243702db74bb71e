#!/usr/bin/env python3
"""Rows/s of the same batches through Neo4j's two HTTP transports, as the
workers send them: common/neo4j.c's neo4j_run() driven by
tests/clients/neo4j_client (built by `make clients`), with
NEXUS_NEO4J_API=tx (one request to tx/commit) or query (the Query API: one
request for one statement, an explicit transaction of n requests for n).

    set -a; . .stack/env; set +a; python3 bench/transports.py [--batches 40]

Shapes, each BATCHES batches of ROWS rows of a W1-like guarded upsert
(content items under a project), every batch creating fresh nodes, then
the same batches again (updates):
  one   - one UNWIND statement of ROWS rows (what a one-table batch is);
  three - the rows in three statements (a batch of three tables);
  call  - the three as one statement of sequential CALL {} subqueries
          (the alternative to an explicit transaction), Query API only.
The combinations take turns every CHUNK batches, so a load that comes and
goes hits each alike; a warm-up round is not reported. Prints one line
per shape and transport: rows/s of creates and of updates, and the median
batch time. Nodes carry the label BenchTransport and are deleted at the end.
"""
import argparse
import json
import os
import statistics
import subprocess
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(ROOT, "build", "tests", "clients", "neo4j_client")
LABEL = "BenchTransport"
CHUNK = 5
GUARDED = (f"UNWIND $rows AS row MERGE (n:{LABEL} {{id: row.k}}) "
           "WITH n, row WHERE n.v IS NULL OR n.v < row.v "
           "SET n += row.p, n.v = row.v "
           "MERGE (p:BenchTransportProject {id: row.parent}) MERGE (p)-[:HAS_CONTENT]->(n) "
           "RETURN row.k AS k, row.v AS v, elementId(n) AS eid")


def rows(run, b, n, version):
    return [{"k": f"{run}-{b}-{i}", "v": version, "parent": f"{run}-p{i % 20}",
             "p": {"title": f"item {i}", "contentType": "text", "tokenCount": i}} for i in range(n)]


def batch(shape, run, b, n, version):
    r = rows(run, b, n, version)
    if shape == "one":
        return [{"statement": GUARDED, "parameters": {"rows": r}}]
    parts = [r[i::3] for i in range(3)]
    if shape == "three":
        return [{"statement": GUARDED, "parameters": {"rows": p}} for p in parts]
    sub = [GUARDED.replace("$rows", f"$rows{i}").replace("RETURN row.k AS k, row.v AS v, elementId(n) AS eid",
                                                          "RETURN count(*) AS c") for i in range(3)]
    # each subquery returns one row, so the CALLs do not multiply
    text = " ".join(f"CALL {{ {s} }}".replace("AS c", f"AS c{i}") for i, s in enumerate(sub)) + " RETURN 1 AS done"
    return [{"statement": text, "parameters": {f"rows{i}": p for i, p in enumerate(parts)}}]


def run_client(api, lines, env):
    e = dict(env, NEXUS_NEO4J_API=api)
    p = subprocess.run([CLIENT, env["NEXUS_NEO4J_URL"], env.get("NEXUS_NEO4J_DB", "neo4j"),
                        env["NEXUS_NEO4J_USER"], env["NEXUS_NEO4J_PASSWORD"], "120000"],
                       input="".join(json.dumps(l) + "\n" for l in lines), capture_output=True, text=True,
                       env=e, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"neo4j_client failed: {p.stderr[-2000:]}")
    out = [json.loads(l) for l in p.stdout.splitlines()]
    for a in out:
        if a["err"] != "ok":
            raise SystemExit(f"{api}: {a['errstr']}")
    return [a["ms"][0] for a in out]


def cypher(env, stmt):
    p = subprocess.run([CLIENT, env["NEXUS_NEO4J_URL"], env.get("NEXUS_NEO4J_DB", "neo4j"),
                        env["NEXUS_NEO4J_USER"], env["NEXUS_NEO4J_PASSWORD"], "600000"],
                       input=json.dumps({"statements": [{"statement": stmt}]}) + "\n",
                       capture_output=True, text=True, timeout=900, env=dict(env, NEXUS_NEO4J_API="tx"))
    return json.loads(p.stdout)


def clean(env):
    """Delete the bench's nodes, 10k at a time (one huge DETACH DELETE runs
    out of Neo4j's transaction memory)."""
    for label in (LABEL, "BenchTransportProject"):
        while True:
            a = cypher(env, f"MATCH (n:{label}) WITH n LIMIT 10000 DETACH DELETE n RETURN count(*) AS c")
            if a["err"] != "ok" or a["results"][0]["data"][0]["row"][0] == 0:
                break


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    env = dict(os.environ)
    cypher(env, f"CREATE CONSTRAINT bench_transport IF NOT EXISTS FOR (n:{LABEL}) REQUIRE n.id IS UNIQUE")
    cypher(env, "CREATE CONSTRAINT bench_transport_p IF NOT EXISTS FOR (n:BenchTransportProject) "
                "REQUIRE n.id IS UNIQUE")
    figures = {}
    combos = [("one", "tx"), ("one", "query"), ("three", "tx"), ("three", "query"), ("call", "query")]
    try:
        for rnd in range(a.rounds + 1):  # round 0 warms plans and JIT up, unreported
            runs = {c: uuid.uuid4().hex[:8] for c in combos}
            totals = {c: [0.0, 0.0, []] for c in combos}
            # chunks of CHUNK batches, the combinations in turn: a load that
            # comes and goes on a shared machine hits each alike
            for first in range(0, a.batches, CHUNK):
                chunk = range(first, min(first + CHUNK, a.batches))
                for shape, api in combos:
                    run = runs[(shape, api)]
                    creates = run_client(api, [{"statements": batch(shape, run, b, a.rows, 1)}
                                               for b in chunk], env)
                    updates = run_client(api, [{"statements": batch(shape, run, b, a.rows, 2)}
                                               for b in chunk], env)
                    t = totals[(shape, api)]
                    t[0] += sum(creates)
                    t[1] += sum(updates)
                    t[2] += creates + updates
            clean(env)
            if rnd == 0:
                continue
            for c, (cms, ums, ms) in totals.items():
                f = figures.setdefault(c, {"c": [], "u": [], "ms": []})
                f["c"].append(a.batches * a.rows / (cms / 1000))
                f["u"].append(a.batches * a.rows / (ums / 1000))
                f["ms"] += ms
    finally:
        clean(env)
    print(f"{a.batches} batches x {a.rows} rows, {a.rounds} rounds after a warm-up; rows/s per round (creates | updates), "
          "median ms per batch")
    for (shape, api), f in figures.items():
        print(f"{shape:5} {api:5}  creates {' '.join(f'{x:7.0f}' for x in f['c'])}  |  updates "
              f"{' '.join(f'{x:7.0f}' for x in f['u'])}  |  {statistics.median(f['ms']):6.1f} ms")


if __name__ == "__main__":
    main()
