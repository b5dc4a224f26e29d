//! Path patterns for `backup --exclude`, `restore --include/--exclude` (restic's rules).
//!
//! A pattern is matched against a path inside the snapshot (relative to the directory that was
//! backed up, `/`-separated, as `ls` shows it). `*` matches any run of characters except `/`,
//! `?` one character except `/`, `[abc]`, `[a-z]` and `[!a-z]` one character of a class, `\`
//! escapes the next character, and `**` as a whole component matches any number of components
//! (also none). A pattern that starts with `/` is anchored at the root of the snapshot; any other
//! pattern may match at any depth (`*.log` matches `x.log` and `var/log/x.log`). A pattern that
//! matches a directory also matches everything below it. A trailing `/` is ignored.

use super::error::{Error, Param, Result};

/// One parsed pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    anchored: bool,
    parts: Vec<String>,
}

impl Pattern {
    /// Parses `text`; an empty pattern or an unclosed `[` is an error.
    pub fn new(text: &str) -> Result<Pattern> {
        let t = text.trim_end_matches('/');
        let anchored = t.starts_with('/');
        let parts: Vec<String> = t
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::to_string)
            .collect();
        let bad = |reason: &str| Error::InvalidArgument {
            param: Param::Pattern,
            reason: format!("pattern {text:?}: {reason}"),
        };
        if parts.is_empty() {
            return Err(bad("matches nothing (empty)"));
        }
        for p in &parts {
            if p != "**" && !class_closed(p.as_bytes()) {
                return Err(bad("a `[` is not closed by `]`"));
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            anchored,
            parts,
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (components separated by `/`, no leading `/` needed) or a directory above
    /// it matches.
    pub fn matches(&self, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        let pat: Vec<&str> = self.parts.iter().map(String::as_str).collect();
        if self.anchored {
            return match_prefix(&pat, &comps);
        }
        (0..comps.len()).any(|i| match_prefix(&pat, &comps[i..]))
    }
}

/// Whether `pat` matches a leading run of `comps` (a directory matches what is below it).
fn match_prefix(pat: &[&str], comps: &[&str]) -> bool {
    match pat.split_first() {
        None => true,
        Some((&"**", rest)) => (0..=comps.len()).any(|i| match_prefix(rest, &comps[i..])),
        Some((p, rest)) => match comps.split_first() {
            Some((c, more)) => glob(p.as_bytes(), c.as_bytes()) && match_prefix(rest, more),
            None => false,
        },
    }
}

fn class_closed(p: &[u8]) -> bool {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' => i += 2,
            b'[' => match class_end(p, i) {
                Some(end) => i = end + 1,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// Index of the `]` closing the class that opens at `start`.
fn class_end(p: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&b'!') || p.get(i) == Some(&b'^') {
        i += 1;
    }
    // A `]` right after the opening (or the negation) is a literal.
    if p.get(i) == Some(&b']') {
        i += 1;
    }
    while i < p.len() {
        match p[i] {
            b'\\' => i += 2,
            b']' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn class_matches(class: &[u8], c: u8) -> bool {
    let (neg, body) = match class.first() {
        Some(b'!' | b'^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < body.len() {
        let mut lo = body[i];
        if lo == b'\\' && i + 1 < body.len() {
            i += 1;
            lo = body[i];
        }
        if i + 2 < body.len() && body[i + 1] == b'-' {
            let hi = body[i + 2];
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
    hit != neg
}

/// One component against one pattern component (`*`, `?`, classes, escapes).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => class_end(p, pi)
                .filter(|&end| class_matches(&p[pi + 1..end], s[si]))
                .map(|end| end + 1),
            Some(b'\\') if p.get(pi + 1) == Some(&s[si]) => Some(pi + 2),
            Some(&c) if c != b'\\' && c == s[si] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                si += 1;
            }
            (None, Some((sp, ss))) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Which paths a command takes: those no exclude pattern matches and, when include patterns are
/// given, that one of them matches.
#[derive(Clone, Debug, Default)]
pub struct PathFilter {
    /// Paths that match one of these are left out (with everything below them).
    pub exclude: Vec<Pattern>,
    /// When not empty, only paths that match one of these (with everything below them).
    pub include: Vec<Pattern>,
}

impl PathFilter {
    /// Builds a filter from pattern texts.
    pub fn new(include: &[String], exclude: &[String]) -> Result<PathFilter> {
        Ok(PathFilter {
            include: include.iter().map(|p| Pattern::new(p)).collect::<Result<_>>()?,
            exclude: exclude.iter().map(|p| Pattern::new(p)).collect::<Result<_>>()?,
        })
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether an exclude pattern matches `path`.
    pub fn excluded(&self, path: &str) -> bool {
        self.exclude.iter().any(|p| p.matches(path))
    }

    /// Whether `path` is taken.
    pub fn takes(&self, path: &str) -> bool {
        !self.excluded(path) && (self.include.is_empty() || self.include.iter().any(|p| p.matches(path)))
    }
}

/// Reads patterns from an exclude file: one per line; blank lines and lines starting with `#`
/// are ignored, surrounding white space is trimmed.
pub fn read_pattern_file(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Pattern::new(p).unwrap().matches(path)
    }

    #[test]
    fn pattern_globs_match_like_restic() {
        assert!(m("*.log", "x.log"));
        assert!(m("*.log", "var/log/x.log"));
        assert!(!m("*.log", "x.log.gz"));
        assert!(m("cache", "home/u/cache/blob"));
        assert!(!m("/cache", "home/u/cache/blob"));
        assert!(m("/home/*/cache", "home/u/cache/blob"));
        assert!(!m("/home/*/cache", "home/u/v/cache"));
        assert!(m("/home/**/cache", "home/u/v/cache"));
        assert!(m("/home/**/cache", "home/cache"));
        assert!(m("f?le[0-9]", "a/file7"));
        assert!(!m("f?le[!0-9]", "a/file7"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("node_modules/", "src/node_modules/x/y.js"));
        assert!(!m("*", ""));
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("a[bc").is_err());
    }

    #[test]
    fn pattern_filter_include_and_exclude() {
        let f = PathFilter::new(&["/etc".into()], &["*.bak".into()]).unwrap();
        assert!(f.takes("etc/hosts"));
        assert!(!f.takes("etc/hosts.bak"));
        assert!(!f.takes("var/x"));
        assert!(PathFilter::default().takes("anything"));
    }
}
