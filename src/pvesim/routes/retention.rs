//! Backup retention (`prune-backups`, `PVE::Storage::prune_mark_backup_group`) and backup
//! attributes (notes from vzdump's notes template, protection).

use std::collections::BTreeMap;

use super::vzdump_guest::GuestLog;
use crate::pvesim::clock::format_epoch;
use crate::pvesim::state::GuestKind;
use crate::pvesim::tasks::TaskCtx;

/// `PVE::Storage::prune_mark_backup_group`: which of `ctimes` (newest first) to keep.
pub(crate) fn prune_marks(entries: &[(i64, bool)], keep: &BTreeMap<String, u32>) -> Vec<bool> {
    let mut marks: Vec<Option<bool>> = entries
        .iter()
        .map(|(_, protected)| protected.then_some(true))
        .collect();
    let rules: [(&str, &str); 6] = [
        ("keep-last", ""),
        ("keep-hourly", "%Y/%m/%d/%H"),
        ("keep-daily", "%Y/%m/%d"),
        ("keep-weekly", "%Y/%V"),
        ("keep-monthly", "%Y/%m"),
        ("keep-yearly", "%Y"),
    ];
    for (option, pattern) in rules {
        let Some(&count) = keep.get(option).filter(|c| **c > 0) else {
            continue;
        };
        let id = |ctime: i64| {
            if pattern.is_empty() {
                ctime.to_string()
            } else {
                format_epoch(ctime, pattern)
            }
        };
        let already: Vec<String> = entries
            .iter()
            .zip(&marks)
            .filter(|(_, m)| **m == Some(true))
            .map(|((c, _), _)| id(*c))
            .collect();
        let mut newly: Vec<String> = Vec::new();
        for (i, (ctime, _)) in entries.iter().enumerate() {
            let key = id(*ctime);
            if marks[i].is_some() || already.contains(&key) {
                continue;
            }
            if !newly.contains(&key) {
                if newly.len() >= count as usize {
                    break;
                }
                newly.push(key);
                marks[i] = Some(true);
            } else {
                marks[i] = Some(false);
            }
        }
    }
    marks.into_iter().map(|m| m.unwrap_or(false)).collect()
}

/// `$generate_notes` of PVE::VZDump: `\\n` and `\\\\` escapes, `{{cluster}}`, `{{guestname}}`,
/// `{{node}}`, `{{vmid}}`; anything else in braces is an error.
pub(crate) fn generate_notes(template: &str, vars: &[(&str, &str)], vmid: u32) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => return Err(format!("unexpected escape character '{other}'")),
            None => out.push('\\'),
        }
    }
    let vmid = vmid.to_string();
    for (name, value) in vars.iter().copied().chain([("vmid", vmid.as_str())]) {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = out.find("{{")
        && let Some(len) = out[start + 2..].find("}}")
    {
        let name = &out[start + 2..start + 2 + len];
        if !name.is_empty() && !name.contains(char::is_whitespace) {
            return Err(format!("unexpected variable name '{name}'"));
        }
    }
    Ok(out)
}

pub(crate) fn set_attribute(
    t: &TaskCtx,
    volid: &str,
    notes: Option<&str>,
    protected: Option<bool>,
    log: &GuestLog,
) {
    let result = t.state(|c| {
        let b = super::storage::find_backup_on(c, &t.node, volid)
            .map_err(|e| e.message.trim_end().to_string())?;
        super::storage::set_attributes(c, &b, notes, protected)
    });
    if let Err(e) = result {
        log.line("WARN", format!("unable to add notes - {e}"));
    }
}

pub(crate) fn prune(
    t: &TaskCtx,
    storage: &str,
    vmid: u32,
    kind: GuestKind,
    keep: &BTreeMap<String, u32>,
    log: &GuestLog,
) {
    let keepstr: Vec<String> = keep.iter().map(|(k, v)| format!("{k}={v}")).collect();
    log.info(format!(
        "prune older backups with retention: {}",
        keepstr.join(", ")
    ));
    let pruned = t.state(|c| {
        let group: Vec<_> = super::storage::backups_on(c, storage, &t.node)
            .into_iter()
            .filter(|b| b.vmid == vmid && b.kind == kind)
            .collect();
        let marks = prune_marks(
            &group.iter().map(|b| (b.ctime, b.protected)).collect::<Vec<_>>(),
            keep,
        );
        let mut removed = 0;
        // Remove PBS entries from the back so indices stay valid.
        for (b, keep) in group.iter().zip(marks).rev() {
            if !keep && super::storage::remove_backup(c, b).is_ok() {
                removed += 1;
            }
        }
        removed
    });
    let extra = if pruned > 0 {
        " not covered by keep-retention policy"
    } else {
        ""
    };
    log.info(format!("pruned {pruned} backup(s){extra}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_marks_keep_last_and_daily_like_pve() {
        let day = 86_400;
        let entries: Vec<(i64, bool)> = vec![
            (10 * day + 100, false),
            (10 * day + 50, false),
            (9 * day, false),
            (8 * day, true),
            (7 * day, false),
        ];
        let mut keep = BTreeMap::new();
        keep.insert("keep-last".to_string(), 1);
        assert_eq!(
            prune_marks(&entries, &keep),
            vec![true, false, false, true, false]
        );
        keep.insert("keep-daily".to_string(), 2);
        assert_eq!(prune_marks(&entries, &keep), vec![true, false, true, true, true]);
    }

    #[test]
    fn notes_templates_expand_variables_and_reject_unknown_ones() {
        let vars = [("guestname", "web"), ("node", "pve1"), ("cluster", "c")];
        assert_eq!(
            generate_notes("{{guestname}}\\n{{vmid}}", &vars, 100),
            Ok("web\n100".to_string())
        );
        assert_eq!(
            generate_notes("{{bogus}}", &vars, 1),
            Err("unexpected variable name 'bogus'".to_string())
        );
    }
}
