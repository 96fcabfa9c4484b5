#!/usr/bin/env python3
"""Assembles bench/results/latest.json from the scenario results of one bench/run.sh, in the
shape docs/PERFORMANCE.md describes, and rewrites the table between the `bench:latest` markers
in docs/PERFORMANCE.md from it. Figures are copied, never recomputed: the JSON and the table
agree by construction."""
import json
import sys
from pathlib import Path

FIGURES = ["cpu_us_per_forwarded_packet", "delivery_ratio", "added_latency_p50_ms",
           "added_latency_p99_ms", "rss_per_participant_mib"]
NOT_RUN = "not run (bench/results/ramp.json missing)"


def load(path):
    return json.loads(Path(path).read_text())


def figures(side):
    return {k: side[k] for k in FIGURES}


def main(out_dir, doc):
    out = Path(out_dir)
    baku_run = load(out / "baku.json")
    fan = load(out / "fanout.json")
    b = baku_run["scenarios"]["baku"]
    rt = figures(b["roundtable"])
    # Like for like with Janus (its whole process): the server's process CPU, the server in a
    # child process of the bench (bench/run.sh runs baku with --spawn-server).
    rt["cpu_us_per_forwarded_packet"] = b["roundtable"]["process_cpu_us_per_forwarded_packet"]
    rt["media_thread_cpu_us_per_forwarded_packet"] = b["roundtable"]["cpu_us_per_forwarded_packet"]
    floor = {"cpu_us_per_forwarded_packet": b["floor"]["cpu_us_per_forwarded_packet"]}
    janus = figures(b["janus"]) if b.get("janus") else None
    ramp_path = out / "ramp.json"
    ramp = load(ramp_path) if ramp_path.exists() else None

    def forum_side(side):
        f = (ramp or {}).get(side, {}).get("forum")
        if not f:
            return None
        out = figures(f)
        # Whole server processes on both sides, as in baku.
        out["cpu_us_per_forwarded_packet"] = f["process_cpu_us_per_forwarded_packet"]
        return out

    forum_rt, forum_j = forum_side("roundtable"), forum_side("janus")
    if ramp:
        forum = {
            "roundtable": forum_rt,
            "janus": forum_j,
            "ratio_vs_janus": (round(forum_rt["cpu_us_per_forwarded_packet"]
                                     / forum_j["cpu_us_per_forwarded_packet"], 3)
                               if forum_rt and forum_j else None),
            "delegates": ramp["load"]["forum"],
        }
        ramp_out = {
            "max_delegates": ramp["roundtable"]["max_delegates"],
            "janus_max_delegates": ramp.get("janus", {}).get("max_delegates"),
            "pass": ramp["load"]["pass"],
        }
    else:
        forum = {"roundtable": None, "janus": None, "status": NOT_RUN}
        ramp_out = {"max_delegates": None, "janus_max_delegates": None, "status": NOT_RUN}
    latest = {
        "machine": baku_run["machine"],
        "date": baku_run["date"],
        "scenarios": {
            "baku": {
                "roundtable": rt,
                "janus": janus,
                "floor": floor,
                "ratio_vs_janus": (round(rt["cpu_us_per_forwarded_packet"]
                                         / janus["cpu_us_per_forwarded_packet"], 3) if janus else None),
                "ratio_vs_floor": round(rt["cpu_us_per_forwarded_packet"]
                                        / floor["cpu_us_per_forwarded_packet"], 3),
            },
            "forum": forum,
            "ramp": ramp_out,
            "fanout": {
                "clients": fan["clients"],
                "p50_ms": fan["fanout_ms"]["p50"],
                "p99_ms": fan["fanout_ms"]["p99"],
            },
        },
    }
    (out / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    s = latest["scenarios"]
    bk = s["baku"]
    jv = (lambda k, unit="": f"{janus[k]}{unit}") if janus else (lambda k, unit="": "not run")
    rows = [
        ("baku: CPU per forwarded packet (server process)", f"{rt['cpu_us_per_forwarded_packet']} µs",
         f"{jv('cpu_us_per_forwarded_packet', ' µs')}, ratio {bk['ratio_vs_janus']}",
         f"floor {floor['cpu_us_per_forwarded_packet']} µs, ratio {bk['ratio_vs_floor']}",
         "≤ 1.5 × floor, ≤ 0.5 × Janus"),
        ("baku: delivery", f"{rt['delivery_ratio']}", jv("delivery_ratio"), "", "≥ 0.999"),
        ("baku: added latency p50 / p99",
         f"{rt['added_latency_p50_ms']} / {rt['added_latency_p99_ms']} ms",
         f"{janus['added_latency_p50_ms']} / {janus['added_latency_p99_ms']} ms" if janus else "not run",
         "", "p99 ≤ 2 ms"),
        ("baku: RSS per participant", f"{rt['rss_per_participant_mib']} MiB",
         jv("rss_per_participant_mib", " MiB"), "", ""),
        ("fanout: 1,000 clients, p50 / p99", f"{s['fanout']['p50_ms']} / {s['fanout']['p99_ms']} ms", "", "",
         "p99 ≤ 20 ms"),
    ]
    if ramp:
        def fx(f, k, unit=""):
            return f"{f[k]}{unit}" if f else "not reached"
        n = forum["delegates"]
        rows += [
            (f"forum ({n} delegates): CPU per forwarded packet (server process)",
             fx(forum_rt, "cpu_us_per_forwarded_packet", " µs"),
             fx(forum_j, "cpu_us_per_forwarded_packet", " µs") + (f", ratio {forum['ratio_vs_janus']}" if forum["ratio_vs_janus"] else ""),
             "", "≤ 0.5 × Janus"),
            (f"forum ({n}): delivery", fx(forum_rt, "delivery_ratio"), fx(forum_j, "delivery_ratio"), "", "≥ 0.999"),
            (f"forum ({n}): added latency p50 / p99",
             f"{forum_rt['added_latency_p50_ms']} / {forum_rt['added_latency_p99_ms']} ms" if forum_rt else "not reached",
             f"{forum_j['added_latency_p50_ms']} / {forum_j['added_latency_p99_ms']} ms" if forum_j else "not reached", "", ""),
            ("ramp: most delegates with loss ≤ 0.1 % and p99 ≤ 10 ms", f"{ramp_out['max_delegates']}",
             f"{ramp_out['janus_max_delegates']}", "", "≥ 300 and more than Janus"),
        ]
    else:
        rows.append(("forum, ramp", "not run", "", "", "ramp ≥ 300 and more than Janus"))
    table = [f"Latest `bench/run.sh` ({latest['date']}, {latest['machine']}; `bench/results/latest.json`):", "",
             "| figure | roundtable | Janus 1.1.2 | bare floor | target |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {a} | {b_} | {c} | {d} | {e} |" for a, b_, c, d, e in rows]
    text = Path(doc).read_text()
    start, end = "<!-- bench:latest -->", "<!-- /bench:latest -->"
    block = start + "\n" + "\n".join(table) + "\n" + end
    if start in text and end in text:
        i, j = text.index(start), text.index(end) + len(end)
        text = text[:i] + block + text[j:]
    else:
        text = text.replace("\n## ", "\n## Latest bench/run.sh\n\n" + block + "\n\n## ", 1)
    Path(doc).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
