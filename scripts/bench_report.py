#!/usr/bin/env python3
"""Renders scripts/bench results into docs/performance.md (between the GENERATED
markers, keeping the hand-written sections) and a latency plot."""
import glob
import json
import os
import platform
import re
import subprocess
import sys

results_dir, page, plot, command = sys.argv[1:5]


def load(name):
    path = os.path.join(results_dir, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return "?"


runs = {os.path.basename(p)[:-5]: json.load(open(p)) for p in glob.glob(os.path.join(results_dir, "*.json"))
        if not os.path.basename(p).startswith("seed-")}
# Alternating rounds of service and floor: the median round of each is in `runs` under the
# plain name (scripts/bench copies it); the rounds themselves are listed separately.
rounds = {name: run for name, run in runs.items() if re.search(r"-r\d+$", name)}
runs = {name: run for name, run in runs.items() if name not in rounds}
order = ["embedded-put-c32", "embedded-normal-put-c32", "embedded-put-half-peak", "embedded-mixed-contended", "embedded-floor-c32",
         "embedded-floor-half-peak",
         "cassandra-put-c32", "cassandra-put-half-peak", "cassandra-mixed-contended", "cassandra-floor-c32",
         "cassandra-floor-half-peak",
         "cluster-put-c32", "cluster-put-half-peak", "cluster-mixed-contended", "cluster-floor-c32",
         "cluster-floor-half-peak", "embedded-search", "cassandra-search"]
BACKENDS = ("embedded", "cassandra", "cluster")
order = [name for name in order if name in runs]

lines = []
lines.append("## Machine and versions\n")
cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
memory = sh("free -g | awk '/Mem:/{print $2}'")
lines.append(f"- CPU: {sh('nproc')} cores, {cpu_model}")
lines.append(f"- Memory: {memory} GiB; kernel {platform.release()}")
lines.append(f"- {sh('rustc --version')}; Java: {sh('java -version 2>&1 | head -1')}")
lines.append("- Apache Cassandra 5.0.8 (scripts/cassandra, 1 GiB heap) on the same machine as the service and the load generator; "
             "`cluster` rows: the 3-node cluster of `scripts/cassandra cluster` (768 MiB heap per node, 16 tokens each) on the "
             "same machine, keyspace at NetworkTopologyStrategy dc1=3, three contact points; both Cassandras run throughout")
lines.append(f"- Reproduce: `{command}` (this page's generated part and the plot are rewritten)\n")

lines.append("## Results\n")
lines.append("| scenario | mode | clients / rate | throughput (req/s) | p50 ms | p90 ms | p99 ms | p99.9 ms | statuses | errors |")
lines.append("|---|---|---|---|---|---|---|---|---|---|")
for name in order:
    r = runs[name]
    load_shape = f"{r['rate']} req/s" if r.get("rate") else f"{r['concurrency']} clients"
    lat = r["latency_ms"]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
    lines.append(f"| {name} | {r['mode']} | {load_shape} | {r['throughput_rps']:.0f} | {lat['p50']:.2f} | {lat['p90']:.2f} | "
                 f"{lat['p99']:.2f} | {lat['p99.9']:.2f} | {statuses} | {r['errors']} |")
lines.append("")
lines.append("Scenarios: `put-c32` is PUT /me with new names from 32 closed-loop clients over 200 users; "
             "`put-half-peak` is an open-loop arrival rate of half the `put-c32` throughput (latency measured "
             "from each request's due time); `mixed-contended` is 20% GET, 10% If-Match PUT (each preceded by "
             "a GET for the ETag), over 10 hot users (412s are expected, not errors); `floor-c32` runs the same "
             "store calls as one PUT (auth read, append + projection, refetch) in-process with no HTTP; "
             "`floor-half-peak` runs them at the `put-half-peak` arrival rate; `embedded-normal-put-c32` is "
             "`put-c32` against the embedded store in its relaxed mode (`KILLRVIDEO_EMBEDDED_SYNC=normal`; "
             "every other embedded row is the default, durable mode); `search` is the moderators' "
             "`GET /api/v1/moderation/users?q=` from 4 clients over a directory of `loadgen seed-directory` users "
             "(half the queries a 3-5 letter fragment of a common first name, a full page of 50; half a whole email "
             "local part, one match).\n")

if rounds:
    lines.append("Rounds (service and floor alternate; the table shows each side's median round):\n")
    lines.append("| backend | round | service PUT/s | floor PUT/s | service / floor |")
    lines.append("|---|---|---|---|---|")
    for backend in BACKENDS:
        for n in range(1, 10):
            service_round, floor_round = rounds.get(f"{backend}-put-c32-r{n}"), rounds.get(f"{backend}-floor-c32-r{n}")
            if service_round and floor_round:
                lines.append(f"| {backend} | {n} | {service_round['throughput_rps']:.0f} | {floor_round['throughput_rps']:.0f} | "
                             f"{service_round['throughput_rps'] / floor_round['throughput_rps']:.0%} |")
    lines.append("")
    half_rounds = [(backend, n, rounds.get(f"{backend}-put-half-peak-r{n}"), rounds.get(f"{backend}-floor-half-peak-r{n}"))
                   for backend in BACKENDS for n in range(1, 10)]
    half_rounds = [row for row in half_rounds if row[2] and row[3]]
    if half_rounds:
        lines.append("Half-peak rounds (service and floor alternate at the same arrival rate; the table above "
                     "shows each side's round with the median p99):\n")
        lines.append("| backend | round | rate (req/s) | service p90 ms | service p99 ms | floor p90 ms | floor p99 ms |")
        lines.append("|---|---|---|---|---|---|---|")
        for backend, n, service_round, floor_round in half_rounds:
            lines.append(f"| {backend} | {n} | {service_round['rate']} | {service_round['latency_ms']['p90']:.2f} | "
                         f"{service_round['latency_ms']['p99']:.2f} | {floor_round['latency_ms']['p90']:.2f} | "
                         f"{floor_round['latency_ms']['p99']:.2f} |")
        lines.append("")

service, floor = runs.get("cassandra-put-c32"), runs.get("cassandra-floor-c32")
targets = []
if service and floor:
    ratio = service["throughput_rps"] / floor["throughput_rps"]
    targets.append(("PUT throughput at 32 clients vs the driver floor", ">= 85%", f"{ratio:.0%} ({service['throughput_rps']:.0f} / {floor['throughput_rps']:.0f})", ratio >= 0.85))
half = runs.get("cassandra-put-half-peak")
if half:
    targets.append(("Cassandra p99 at half of peak", "<= 20 ms", f"{half['latency_ms']['p99']:.1f} ms", half["latency_ms"]["p99"] <= 20))
emb = runs.get("embedded-put-c32")
if emb:
    targets.append(("embedded PUT throughput (durable mode)", ">= 15,000/s", f"{emb['throughput_rps']:.0f}/s", emb["throughput_rps"] >= 15000))
    targets.append(("embedded PUT p99 (32 clients)", "<= 5 ms", f"{emb['latency_ms']['p99']:.1f} ms", emb["latency_ms"]["p99"] <= 5))
total_errors = sum(r["errors"] for r in list(runs.values()) + list(rounds.values()))
targets.append(("error responses", "none", str(total_errors), total_errors == 0))
lines.append("## Targets\n")
lines.append("| measure | target | measured | met |")
lines.append("|---|---|---|---|")
for measure, target, measured, met in targets:
    lines.append(f"| {measure} | {target} | {measured} | {'yes' if met else '**no**'} |")
lines.append("")
floor_half = runs.get("cassandra-floor-half-peak")
if half and floor_half:
    lines.append(f"For comparison, the driver floor alone at the same arrival rate ({floor_half['rate']} req/s): "
                 f"p50 {floor_half['latency_ms']['p50']:.1f} ms, p99 {floor_half['latency_ms']['p99']:.1f} ms.\n")

searches = [(backend, runs.get(f"{backend}-search")) for backend in ("embedded", "cassandra")]
searches = [(backend, run) for backend, run in searches if run]
if searches:
    lines.append("## Search latency\n")
    lines.append("| backend | users in the directory | searches/s (4 clients) | p50 ms | p99 ms |")
    lines.append("|---|---|---|---|---|")
    for backend, run in searches:
        lines.append(f"| {backend} | {run['users']:,} | {run['throughput_rps']:.0f} | "
                     f"{run['latency_ms']['p50']:.2f} | {run['latency_ms']['p99']:.2f} |")
    lines.append("")

cluster, cluster_floor = runs.get("cluster-put-c32"), runs.get("cluster-floor-c32")
cluster_half = runs.get("cluster-put-half-peak")
if cluster and service:
    lines.append("## One node at RF 1 against three at RF 3\n")
    lines.append("The same PUT load against the service on the single node (`cassandra`, RF 1) and on the cluster "
                 "(`cluster`, RF 3, every write to three replicas, acknowledged by two), on the same 2 cores:\n")
    lines.append("| measure | single node, RF 1 | cluster, RF 3 | cluster / single |")
    lines.append("|---|---|---|---|")
    lines.append(f"| service PUT/s, 32 clients | {service['throughput_rps']:.0f} | {cluster['throughput_rps']:.0f} | "
                 f"{cluster['throughput_rps'] / service['throughput_rps']:.0%} |")
    lines.append(f"| service p99 ms, 32 clients | {service['latency_ms']['p99']:.1f} | {cluster['latency_ms']['p99']:.1f} | "
                 f"{cluster['latency_ms']['p99'] / service['latency_ms']['p99']:.1f}x |")
    if half and cluster_half:
        lines.append(f"| service p99 ms at half its own peak | {half['latency_ms']['p99']:.1f} ({half['rate']}/s) | "
                     f"{cluster_half['latency_ms']['p99']:.1f} ({cluster_half['rate']}/s) | "
                     f"{cluster_half['latency_ms']['p99'] / half['latency_ms']['p99']:.1f}x |")
    if floor and cluster_floor:
        lines.append(f"| driver floor PUT/s, 32 in flight | {floor['throughput_rps']:.0f} | {cluster_floor['throughput_rps']:.0f} | "
                     f"{cluster_floor['throughput_rps'] / floor['throughput_rps']:.0%} |")
        lines.append(f"| service / floor | {service['throughput_rps'] / floor['throughput_rps']:.0%} | "
                     f"{cluster['throughput_rps'] / cluster_floor['throughput_rps']:.0%} | |")
    lines.append("")

rebuilds = []
for backend in BACKENDS:
    path = os.path.join(results_dir, f"rebuild-{backend}.txt")
    if os.path.exists(path):
        text = open(path).read()
        m = re.search(r"(\d+) events from (\d+) ranges in ([\d.]+)s \((\d+) events/s\)", text)
        if m:
            rebuilds.append((backend, int(m.group(1)), float(m.group(3)), int(m.group(4))))
if rebuilds:
    lines.append("## Rebuild throughput\n")
    lines.append("`rebuild --into users_bench --parallel 4` over a log seeded by `loadgen seed` "
                 "(registrations plus profile updates):\n")
    lines.append("| backend | events | seconds | events/s |")
    lines.append("|---|---|---|---|")
    for backend, events, secs, rate in rebuilds:
        lines.append(f"| {backend} | {events:,} | {secs:.1f} | {rate:,} |")
    lines.append("")

lines.append(f"![latency percentiles]({os.path.basename(plot)})\n")

generated = "\n".join(lines)
text = open(page).read() if os.path.exists(page) else "<!-- BEGIN GENERATED -->\n<!-- END GENERATED -->\n"
text = re.sub(r"<!-- BEGIN GENERATED -->.*<!-- END GENERATED -->",
              lambda _: "<!-- BEGIN GENERATED -->\n" + generated + "\n<!-- END GENERATED -->", text, flags=re.S)
open(page, "w").write(text)

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

quantiles = ["p50", "p90", "p99", "p99.9"]
fig, ax = plt.subplots(figsize=(9, 5))
for name in order:
    ax.plot(quantiles, [runs[name]["latency_ms"][q] for q in quantiles], marker="o", label=name)
ax.set_yscale("log")
ax.set_ylabel("latency (ms, log scale)")
ax.set_title("killrvideo-users: latency percentiles per scenario")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(plot, dpi=110)
