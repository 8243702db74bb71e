#!/usr/bin/env python3
"""bench/plot.py RESULTS.json OUT.png: throughput and latency of a
bench/run result as one PNG (matplotlib; bench/run picks the Python that
has it)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = {"nexus-sync": "tab:blue", "connector": "tab:orange", "ceiling": "tab:green"}


def main(src, dst):
    res = json.load(open(src))
    runs, lat = res["runs"], res["latency"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax1.bar(range(len(runs)), [r["events_per_s"] for r in runs], color=[PALETTE.get(r["system"], "#999999") for r in runs])
    ax1.set_xticks(range(len(runs)))
    ax1.set_xticklabels([f"{r['workload']} {r['system']} x{r['instances']}" for r in runs], fontsize=7,
                        rotation=60, ha="right")
    ax1.set_ylabel("events/s (draining pre-filled lane topics)")
    ax1.set_title("Throughput")
    for system in sorted({r["system"] for r in lat}):
        pts = sorted((r for r in lat if r["system"] == system), key=lambda r: r["rate"])
        for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
            ax2.plot([r["rate"] for r in pts], [r[key] for r in pts], style, color=PALETTE.get(system),
                     label=f"{system} {key[:3]}")
    ax2.set_xlabel("changes/s")
    ax2.set_ylabel("PostgreSQL commit to Neo4j visible, ms")
    ax2.set_title("End-to-end latency")
    if lat:
        ax2.legend(fontsize=7)
    m = res["machine"]
    fig.suptitle(f"nexus-sync benchmark, scale {res['scale']} ({m['cpus']} CPUs, load {m['loadavg_at_start'][0]} "
                 f"at start, shared)")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
