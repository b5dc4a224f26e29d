#!/usr/bin/env python3
"""Turn compare.sh's raw samples into the printed table and the JSON results.

Usage: report.py META_TXT SAMPLES_TSV BREAKDOWN_TSV [JSON_OUT]   (called by compare.sh)
       report.py --from-json RESULTS_JSON [--markdown]           (print a saved run again;
                                                                  --markdown: tables for the README)

Throughput is logical bytes (apparent sizes of the dataset files of that version) divided by wall
seconds, in MB/s (10^6 bytes). Every figure is the median over runs; ours-vs-peer ratios are the
median of the per-run ratios (each run's tools ran back to back, so pairing them cancels most of
the machine's noise).
"""
import csv
import json
import statistics
import sys

MB, MiB = 1e6, float(1 << 20)
ORDER = ["ours", "restic", "borg", "borg-zstd", "casync"]


def read_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                meta[key] = value
    return meta


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def per_run(samples, lv1, lv2):
    """One dict of derived metrics per (run, tool) sample."""
    out = []
    for s in samples:
        f = {k: float(v) for k, v in s.items() if k not in ("tool",)}
        out.append({
            "run": int(f["run"]),
            "tool": s["tool"],
            "first_backup_MBps": lv1 / MB / f["first_s"],
            "incremental_MBps": lv2 / MB / f["incr_s"],
            "restore_MBps": lv2 / MB / f["restore_s"],
            "first_s": f["first_s"],
            "incr_s": f["incr_s"],
            "restore_s": f["restore_s"],
            "repo_v1_bytes": int(f["repo_v1"]),
            "repo_v1v2_bytes": int(f["repo_v2"]),
            "repo_growth_v2_bytes": int(f["repo_v2"] - f["repo_v1"]),
            "repo_disk_bytes": int(f["repo_disk_v2"]),
            "repo_files": int(f["repo_files"]),
            "dedup_ratio": (lv1 + lv2) / f["repo_v2"],
            "cpu_v1_s": f["cpu_v1"],
            "cpu_v2_s": f["cpu_v2"],
            "cpu_restore_s": f["cpu_restore"],
            "load1": f["load1"],
            "peak_rss_kib": int(max(f["rss_init"], f["rss_v1"], f["rss_v2"], f["rss_restore"])),
            "rss_kib": {"init": int(f["rss_init"]), "backup_v1": int(f["rss_v1"]),
                        "backup_v2": int(f["rss_v2"]), "restore": int(f["rss_restore"])},
        })
    return out


def medians(rows):
    keys = [k for k in rows[0] if k not in ("run", "tool", "rss_kib")]
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def paired_ratio(rows, a, b, key, invert=False):
    """Median over runs of rows[a][key] / rows[b][key] (or b/a when invert)."""
    by = {}
    for r in rows:
        by.setdefault(r["run"], {})[r["tool"]] = r[key]
    vals = [(v[b] / v[a]) if invert else (v[a] / v[b]) for v in by.values() if a in v and b in v]
    return statistics.median(vals) if vals else None


def table(header, rows, md=False):
    if md:
        line = lambda r: "| " + " | ".join(str(c) for c in r) + " |"
        return "\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def build_doc(meta, rows, parts):
    """Everything the report shows, as the JSON document that --json writes."""
    lv1, lv2 = int(meta["logical_v1"]), int(meta["logical_v2"])
    tools = sorted({r["tool"] for r in rows}, key=lambda t: ORDER.index(t) if t in ORDER else 99)
    med = {t: medians([r for r in rows if r["tool"] == t]) for t in tools}
    best = {t: {k: max(r[k] for r in rows if r["tool"] == t)
                for k in ("first_backup_MBps", "incremental_MBps", "restore_MBps")} for t in tools}
    ratios = {}
    if "ours" in tools and "restic" in tools:
        ratios["ours_vs_restic"] = {
            "first_backup": paired_ratio(rows, "ours", "restic", "first_s", invert=True),
            "incremental": paired_ratio(rows, "ours", "restic", "incr_s", invert=True),
            "restore": paired_ratio(rows, "ours", "restic", "restore_s", invert=True),
            "dedup": paired_ratio(rows, "ours", "restic", "dedup_ratio"),
        }
    if "ours" in tools and "casync" in tools:
        ratios["ours_vs_casync"] = {"dedup": paired_ratio(rows, "ours", "casync", "dedup_ratio")}
    return {
        "machine": {k: meta[k] for k in ("nproc", "cpu", "ram_kib", "disk", "kernel", "os")},
        "dataset": {"path": meta["dataset"], "logical_v1_bytes": lv1, "logical_v2_bytes": lv2},
        "runs": int(meta["runs"]),
        "timed_sync": meta["timed_sync"] == "1",
        "borg_encryption": meta["borg_encryption"],
        "versions": {k[len("version."):]: v for k, v in meta.items() if k.startswith("version.")},
        "tools": tools,
        "medians": med,
        "fastest_run": best,
        "ratios": ratios,
        "samples": rows,
        "breakdown": [{k: (v if k in ("tool", "part") else int(v)) for k, v in p.items()} for p in parts],
    }


def render(doc, md=False):
    m_, ds, tools, med = doc["machine"], doc["dataset"], doc["tools"], doc["medians"]
    lv1, lv2 = ds["logical_v1_bytes"], ds["logical_v2_bytes"]
    print(f"\n{doc['runs']} run(s), medians; logical v1 {lv1 / MB:.0f} MB, v2 {lv2 / MB:.0f} MB "
          f"(MB = 10^6 bytes); machine: {m_['nproc']} cores, {m_['cpu']}, "
          f"{int(m_['ram_kib']) / (1 << 20):.0f} GiB RAM, {m_['disk']}\n")
    header = ["tool", "first MB/s", "incr MB/s", "restore MB/s", "repo v1 MiB", "repo v1+v2 MiB",
              "v2 adds MiB", "dedup", "peak RSS MiB", "repo files", "on disk MiB"]
    body = []
    for t in tools:
        m = med[t]
        body.append([t, f"{m['first_backup_MBps']:.0f}", f"{m['incremental_MBps']:.0f}",
                     f"{m['restore_MBps']:.0f}", f"{m['repo_v1_bytes'] / MiB:.0f}",
                     f"{m['repo_v1v2_bytes'] / MiB:.0f}", f"{m['repo_growth_v2_bytes'] / MiB:.0f}",
                     f"{m['dedup_ratio']:.2f}", f"{m['peak_rss_kib'] / 1024:.0f}", f"{m['repo_files']:.0f}",
                     f"{m['repo_disk_bytes'] / MiB:.0f}"])
    print(table(header, body, md))
    print("\nCPU seconds (user+system, all of the tool's processes), 1-minute load average at step "
          "start (2 cores: above ~2 means other work competed for the CPU), and the fastest run's MB/s\n")
    best = doc["fastest_run"]
    body = [[t, f"{med[t]['cpu_v1_s']:.1f}", f"{med[t]['cpu_v2_s']:.1f}", f"{med[t]['cpu_restore_s']:.1f}",
             f"{med[t]['load1']:.1f}", f"{best[t]['first_backup_MBps']:.0f}", f"{best[t]['incremental_MBps']:.0f}",
             f"{best[t]['restore_MBps']:.0f}"] for t in tools]
    print(table(["tool", "v1 CPU s", "v2 CPU s", "restore CPU s", "load", "fastest first MB/s",
                 "fastest incr MB/s", "fastest restore MB/s"], body, md))

    r = doc["ratios"].get("ours_vs_restic")
    if r:
        print(f"\nours vs restic (median of per-run ratios): first backup {r['first_backup']:.2f}x "
              f"(target >= 2), incremental {r['incremental']:.2f}x (target >= 3), restore "
              f"{r['restore']:.2f}x (target >= 2), dedup ratio {r['dedup']:.2f}x (target >= 1)")
    r = doc["ratios"].get("ours_vs_casync")
    if r:
        print(f"ours vs casync: dedup ratio {r['dedup']:.2f}x (target >= 0.90)")
    if "ours" not in tools:
        print("\n(ours not measured: no ratios)")

    parts = doc["breakdown"]
    if parts:
        print("\nrepository growth per dataset part, each part backed up alone (MiB): v1 / v2 adds\n")
        names = sorted({p["part"] for p in parts})
        cells = {(p["tool"], p["part"]): p for p in parts}
        first = parts[0]["tool"]
        body = [["(logical v1 / v2)"] + [f"{cells[(first, n)]['logical_v1'] / MiB:.1f} / "
                                         f"{cells[(first, n)]['logical_v2'] / MiB:.1f}" for n in names]]
        for t in [t for t in ORDER if any(p["tool"] == t for p in parts)]:
            row = [t]
            for n in names:
                c = cells.get((t, n))
                row.append(f"{c['repo_v1'] / MiB:.1f} / {(c['repo_v2'] - c['repo_v1']) / MiB:.1f}" if c else "-")
            body.append(row)
        print(table(["tool"] + names, body, md))


def main():
    args = sys.argv[1:]
    if args and args[0] == "--from-json":
        if len(args) not in (2, 3) or (len(args) == 3 and args[2] != "--markdown"):
            sys.exit(__doc__)
        with open(args[1], encoding="utf-8") as fh:
            render(json.load(fh), md=len(args) == 3)
        return
    if len(args) not in (3, 4):
        sys.exit(__doc__)
    meta = read_meta(args[0])
    rows = per_run(read_tsv(args[1]), int(meta["logical_v1"]), int(meta["logical_v2"]))
    doc = build_doc(meta, rows, read_tsv(args[2]))
    render(doc)
    if len(args) == 4 and args[3]:
        with open(args[3], "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        print(f"\nresults written to {args[3]}")


if __name__ == "__main__":
    main()
