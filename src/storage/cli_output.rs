//! Human and JSON output of the store commands (JSON on stdout; human summaries on stdout,
//! progress bars on stderr only when it is a terminal).

use std::io::{self, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::backup::{Progress, SnapshotSummary};
use super::browse::{TreeDiff, TreeEntry};
use super::config::RepoConfig;
use super::gc::{GcReport, PruneReport};
use super::index::SnapshotInfo;
use super::reindex::ReindexReport;
use super::repair::RepairReport;
use super::restore::RestoreSummary;
use super::store::Stats;
use super::verify::VerifyReport;

/// A progress bar (hidden unless enabled).
pub(crate) struct Bar(ProgressBar);

impl Progress for Bar {
    fn add(&self, n: u64) {
        self.0.inc(n);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

pub(crate) fn bar(enabled: bool, total: Option<u64>) -> Bar {
    if !enabled {
        return Bar(ProgressBar::hidden());
    }
    let pb = match total {
        Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    Bar(pb)
}

fn json<T: Serialize>(w: &mut dyn Write, v: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, v)?;
    writeln!(w)
}

/// Bytes with a binary unit.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn init(w: &mut dyn Write, repo: &str, cfg: &RepoConfig, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, cfg);
    }
    let p = &cfg.params;
    writeln!(
        w,
        "created repository {repo} (format {}, {}, chunks {}/{}/{} min/avg/max, zstd {}, packs {})",
        cfg.format_version,
        if cfg.key_check.is_some() {
            "encrypted"
        } else {
            "not encrypted"
        },
        bytes(p.chunker.min.into()),
        bytes(p.chunker.avg.into()),
        bytes(p.chunker.max.into()),
        p.zstd_level,
        bytes(p.pack_size.into())
    )?;
    Ok(())
}

pub(crate) fn backup(w: &mut dyn Write, s: &SnapshotSummary, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, s);
    }
    writeln!(
        w,
        "snapshot {} ({}@{}) saved{}",
        s.snapshot.id,
        s.snapshot.name,
        s.snapshot.time,
        if s.is_complete() { "" } else { " but INCOMPLETE" }
    )?;
    writeln!(w, "  bytes read    {}", bytes(s.bytes_read))?;
    writeln!(
        w,
        "  new bytes     {} in {} of {} chunks",
        bytes(s.new_bytes),
        s.new_chunks,
        s.chunks
    )?;
    writeln!(w, "  stored bytes  {}", bytes(s.stored_bytes))?;
    writeln!(w, "  dedup ratio   {:.2}", s.dedup_ratio)?;
    writeln!(
        w,
        "  throughput    {:.1} MB/s ({:.2} s)",
        s.throughput_mb_s, s.seconds
    )?;
    for p in &s.skipped {
        writeln!(w, "  skipped       {} ({})", p.path, p.reason)?;
    }
    for f in &s.shrunk {
        writeln!(
            w,
            "  shrunk        {} ({} of {} bytes read; zeros in the snapshot for the rest)",
            f.path, f.read, f.size
        )?;
    }
    for m in &s.warnings {
        writeln!(w, "  warning       {m}")?;
    }
    Ok(())
}

pub(crate) fn restore(
    w: &mut dyn Write,
    s: &RestoreSummary,
    as_json: bool,
    to_stdout: bool,
) -> io::Result<()> {
    if as_json && !to_stdout {
        return json(w, s);
    }
    let line = format!(
        "restored snapshot {}: {} in {:.2} s ({:.1} MB/s)",
        s.snapshot,
        bytes(s.bytes),
        s.seconds,
        s.throughput_mb_s
    );
    // With `--to -` stdout carries the data, so the summary goes to stderr.
    if to_stdout {
        eprintln!("{line}");
        Ok(())
    } else {
        writeln!(w, "{line}")
    }
}

pub(crate) fn list(w: &mut dyn Write, snaps: &[SnapshotInfo], as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, &snaps);
    }
    writeln!(
        w,
        "{:<8}  {:<20}  {:<24}  {:>10}  {:<6}  tags",
        "ID", "TIME", "NAME", "SIZE", "KIND"
    )?;
    for s in snaps {
        let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let state = match (&s.last_verify, s.complete) {
            (_, false) => " (incomplete)",
            _ if s.damaged => " (DAMAGED: not fully restorable)",
            (Some(v), true) if !v.ok => " (VERIFY FAILED)",
            _ => "",
        };
        writeln!(
            w,
            "{:<8}  {:<20}  {:<24}  {:>10}  {:<6}  {}{state}",
            s.id,
            s.time,
            s.name,
            bytes(s.size),
            s.kind,
            tags.join(",")
        )?;
    }
    Ok(())
}

pub(crate) fn ls(w: &mut dyn Write, entries: &[TreeEntry], as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, &entries);
    }
    for e in entries {
        let when = jiff::Timestamp::from_second(e.mtime as i64)
            .map_or_else(|_| e.mtime.to_string(), |t| t.to_string());
        let link = e.link.as_deref().map_or(String::new(), |l| format!(" -> {l}"));
        writeln!(
            w,
            "{:<8} {:04o} {:>10}  {when}  {}{link}",
            e.kind, e.mode, e.size, e.path
        )?;
    }
    Ok(())
}

pub(crate) fn diff(w: &mut dyn Write, d: &TreeDiff, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, d);
    }
    for e in &d.added {
        writeln!(w, "+ {} ({})", e.path, bytes(e.size))?;
    }
    for e in &d.removed {
        writeln!(w, "- {} ({})", e.path, bytes(e.size))?;
    }
    for c in &d.changed {
        writeln!(
            w,
            "M {} ({} -> {}; {})",
            c.path,
            bytes(c.size_before),
            bytes(c.size_after),
            c.what.join(", ")
        )?;
    }
    writeln!(
        w,
        "added {} paths ({}), removed {} ({}), changed {} ({})",
        d.added.len(),
        bytes(d.added_bytes),
        d.removed.len(),
        bytes(d.removed_bytes),
        d.changed.len(),
        bytes(d.changed_bytes)
    )
}

pub(crate) fn verify(w: &mut dyn Write, r: &VerifyReport, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, r);
    }
    for p in &r.problems {
        writeln!(w, "PROBLEM: {p}")?;
    }
    if r.ok {
        writeln!(
            w,
            "verify OK: {} snapshots, {} chunks{}",
            r.snapshots_checked,
            r.chunks_checked,
            if r.read_data {
                format!(
                    ", {} read{}",
                    bytes(r.bytes_read),
                    match &r.read_data_subset {
                        Some(s) => format!(" ({} of {} packs, subset {s})", r.packs_read, r.packs_needed),
                        None => String::new(),
                    }
                )
            } else {
                String::new()
            }
        )?;
    } else {
        writeln!(
            w,
            "verify FAILED: {} problems; affected snapshots:",
            r.problems.len()
        )?;
        for s in &r.affected_snapshots {
            writeln!(w, "  {s}")?;
        }
    }
    Ok(())
}

pub(crate) fn prune(w: &mut dyn Write, r: &PruneReport, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, r);
    }
    for d in &r.decisions {
        writeln!(
            w,
            "{:<12} {} {} {}",
            serde_json::to_value(d.mark)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            d.id,
            d.name,
            d.time
        )?;
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    writeln!(w, "{verb} {} snapshots; run `gc` to free their space", r.removed)?;
    Ok(())
}

pub(crate) fn gc(w: &mut dyn Write, r: &GcReport, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, r);
    }
    writeln!(
        w,
        "gc: {} packs deleted, {} repacked, {} chunks and {} incomplete snapshots dropped, {} stray files swept, {} freed",
        r.packs_deleted,
        r.packs_repacked,
        r.chunks_removed,
        r.incomplete_snapshots_removed,
        r.stray_files_deleted,
        bytes(r.bytes_freed)
    )?;
    for k in &r.packs_kept {
        writeln!(w, "  kept {k}")?;
    }
    Ok(())
}

pub(crate) fn repair(w: &mut dyn Write, r: &RepairReport, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, r);
    }
    for k in &r.packs_lost {
        writeln!(w, "lost pack {k}: its chunks were dropped from the index")?;
    }
    for k in &r.packs_salvaged {
        writeln!(
            w,
            "damaged pack {k}: intact chunks copied to a new pack, the rest dropped"
        )?;
    }
    for s in &r.snapshots_marked {
        writeln!(w, "marked DAMAGED {s}")?;
    }
    for s in &r.snapshots_unmarked {
        writeln!(w, "unmarked {s}: every chunk it needs is stored again")?;
    }
    writeln!(
        w,
        "repair: {} chunks dropped, {} snapshots marked damaged, {} unmarked, {} still damaged",
        r.chunks_dropped,
        r.snapshots_marked.len(),
        r.snapshots_unmarked.len(),
        r.snapshots_still_damaged
    )?;
    if !r.all_restorable() {
        writeln!(
            w,
            "back up the same data again to store the lost chunks; damaged snapshots stay listed \
             until `prune` or a later `repair` (once they are whole again) clears them"
        )?;
    }
    Ok(())
}

pub(crate) fn stats(w: &mut dyn Write, s: &Stats, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, s);
    }
    writeln!(
        w,
        "repository    {} (format {}, {})",
        s.repo,
        s.format_version,
        if s.encrypted { "encrypted" } else { "not encrypted" }
    )?;
    writeln!(w, "snapshots     {}", s.snapshots)?;
    writeln!(w, "logical bytes {}", bytes(s.logical_bytes))?;
    writeln!(w, "unique chunks {} ({})", s.chunks, bytes(s.unique_bytes))?;
    writeln!(w, "stored bytes  {} in {} packs", bytes(s.stored_bytes), s.packs)?;
    writeln!(w, "dedup ratio   {:.2}", s.dedup_ratio)?;
    Ok(())
}

pub(crate) fn reindex(w: &mut dyn Write, r: &ReindexReport, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, r);
    }
    for p in &r.problems {
        writeln!(w, "PROBLEM: {p}")?;
    }
    writeln!(
        w,
        "reindexed {} packs, {} chunks, {} snapshots",
        r.packs, r.chunks, r.snapshots
    )?;
    Ok(())
}
