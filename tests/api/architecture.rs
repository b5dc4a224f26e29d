//! The import rules of `ARCHITECTURE.md`, checked from the source so they cannot decay: every
//! `crate::…`, `super::…`, `kube::…` and `k8s_openapi::…` path in a module is resolved to the
//! top-level area it names, and each area may only name what its rules allow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A source file and its module path (`controllers::service::plan`).
struct Module {
    file: PathBuf,
    path: Vec<String>,
    text: String,
}

fn modules() -> Vec<Module> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&src).unwrap().with_extension("");
            let mut path: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if path
                .last()
                .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
            {
                path.pop();
            }
            let text = std::fs::read_to_string(&file).unwrap();
            Module { file, path, text }
        })
        .collect()
}

/// The code of a file without comments (line comments and doc comments), so prose that names a
/// module does not count as an import.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits the top level of a `{a, b::c, d::{e, f}}` group into its items.
fn group_items(s: &str) -> Vec<String> {
    let (mut depth, mut item, mut items) = (0, String::new(), Vec::new());
    for ch in s.chars() {
        match ch {
            '{' => {
                depth += 1;
                if depth > 1 {
                    item.push(ch);
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    items.push(std::mem::take(&mut item));
                    break;
                }
                item.push(ch);
            }
            ',' if depth == 1 => items.push(std::mem::take(&mut item)),
            _ if depth >= 1 => item.push(ch),
            _ => {}
        }
    }
    items
        .into_iter()
        .map(|i| i.trim().to_owned())
        .filter(|i| !i.is_empty())
        .collect()
}

/// Expands a path that may continue with a `{…}` group into full paths (two levels deep is
/// enough for the areas we check).
fn expand(prefix: &[String], rest: &str) -> Vec<Vec<String>> {
    let rest = rest.trim_start();
    if rest.starts_with('{') {
        return group_items(rest)
            .into_iter()
            .flat_map(|item| expand(prefix, &item))
            .collect();
    }
    let mut path = prefix.to_vec();
    let mut rest = rest;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        path.push(ident);
        match rest.strip_prefix("::") {
            Some(r) if r.trim_start().starts_with('{') => return expand(&path, r),
            Some(r) => rest = r,
            None => break,
        }
    }
    vec![path]
}

/// Every crate-internal path a module names, resolved from the crate root.
fn internal_paths(m: &Module) -> BTreeSet<Vec<String>> {
    let code = code(&m.text);
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b'$') {
            continue;
        }
        out.extend(expand(&[], &code[i + "crate::".len()..]));
    }
    // `super::` chains, resolved against the module's own path. A `#[path]`-included test file
    // (`x_tests.rs` next to `x.rs`) is a child of `x`; treat it as `x` itself for this purpose.
    let here: Vec<String> = {
        let mut p = m.path.clone();
        if let Some(last) = p.last_mut()
            && let Some(stem) = last.strip_suffix("_tests")
        {
            *last = stem.to_owned();
            p.push("tests".into());
        }
        p
    };
    for (i, _) in code.match_indices("super::") {
        if i >= 2 && &code[i - 2..i] == "::" {
            continue; // the second `super` of a chain
        }
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            continue;
        }
        let mut rest = &code[i..];
        let mut base = here.clone();
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        out.extend(expand(&base, rest));
    }
    out
}

fn names_external(m: &Module, krate: &str) -> bool {
    let code = code(&m.text);
    let needle = format!("{krate}::");
    code.match_indices(&needle).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

fn starts(path: &[String], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
}

/// The kind folders: every folder of `src/controllers` except the shared layers.
fn kinds() -> Vec<String> {
    let dir = Path::new(ROOT).join("src/controllers");
    let mut kinds: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["runtime", "kit", "pve"].contains(&n.as_str()))
        .collect();
    kinds.sort();
    kinds
}

/// The area of a module path: `controllers::<layer or kind>` inside the controllers, else the
/// top-level module.
fn area(path: &[String]) -> String {
    match path {
        [c, sub, ..] if c == "controllers" => format!("controllers::{sub}"),
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

fn violations() -> Vec<String> {
    let kinds = kinds();
    let mut out = Vec::new();
    for m in modules() {
        let own = area(&m.path);
        let file = m.file.strip_prefix(ROOT).unwrap().display().to_string();
        let named: BTreeSet<String> = internal_paths(&m)
            .iter()
            .map(|p| area(p))
            .filter(|a| !a.is_empty() && *a != own)
            .collect();
        let mut deny = |cond: bool, what: &str| {
            if cond {
                out.push(format!("{file}: {what}"));
            }
        };
        let top = m.path.first().map(String::as_str).unwrap_or_default();
        if ["proxmox", "pvesim", "storage"].contains(&top) {
            deny(names_external(&m, "kube"), "imports kube");
            deny(names_external(&m, "k8s_openapi"), "imports k8s_openapi");
            deny(
                named.iter().any(|a| a.starts_with("controllers")),
                "imports controllers",
            );
        }
        if top == "pvesim" {
            deny(named.contains("proxmox"), "the simulator imports the client");
        }
        if top == "proxmox" {
            deny(named.contains("pvesim"), "the client imports the simulator");
        }
        if top == "crd" {
            for a in ["proxmox", "pvesim", "storage"] {
                deny(named.contains(a), &format!("crd imports {a}"));
            }
            deny(
                named.iter().any(|a| a.starts_with("controllers")),
                "crd imports controllers",
            );
        }
        let layer = |name: &str| named.contains(&format!("controllers::{name}"));
        let kind_named: Vec<&String> = kinds.iter().filter(|k| layer(k)).collect();
        match own.as_str() {
            "controllers::runtime" => {
                deny(layer("pve"), "runtime imports pve");
                deny(
                    !kind_named.is_empty(),
                    &format!("runtime imports kind {kind_named:?}"),
                );
            }
            "controllers::kit" => {
                deny(names_external(&m, "kube"), "kit imports kube");
                deny(names_external(&m, "k8s_openapi"), "kit imports k8s_openapi");
                for l in ["runtime", "pve"] {
                    deny(layer(l), &format!("kit imports {l}"));
                }
                deny(
                    !kind_named.is_empty(),
                    &format!("kit imports kind {kind_named:?}"),
                );
            }
            "controllers::pve" => deny(
                !kind_named.is_empty(),
                &format!("pve imports kind {kind_named:?}"),
            ),
            a if kinds.iter().any(|k| a == format!("controllers::{k}")) => {
                deny(
                    !kind_named.is_empty(),
                    &format!("a kind imports another kind {kind_named:?}"),
                );
            }
            _ => {}
        }
        let allowed_everywhere = starts(&m.path, &["controllers"]) && m.path.len() == 1
            || starts(&m.path, &["demo"])
            || m.path.is_empty();
        if !allowed_everywhere && kind_named.len() == kinds.len() && kinds.len() > 1 {
            out.push(format!(
                "{file}: names every kind; only controllers/mod.rs and the demo may"
            ));
        }
    }
    out
}

#[test]
fn import_rules_of_architecture_md_hold() {
    let found = violations();
    assert!(
        found.is_empty(),
        "import rules broken (see ARCHITECTURE.md):\n{}",
        found.join("\n")
    );
}

#[test]
fn controllers_layers_have_no_import_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in modules()
        .into_iter()
        .filter(|m| starts(&m.path, &["controllers"]) && m.path.len() > 1)
    {
        let own = area(&m.path);
        for p in internal_paths(&m) {
            let a = area(&p);
            if a.starts_with("controllers::") && a != own {
                graph.entry(own.clone()).or_default().insert(a);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let from = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if let Some(cycle) = visit(n, &graph, &mut state, &mut Vec::new()) {
            panic!("import cycle between controller layers: {}", cycle.join(" -> "));
        }
    }
    assert!(
        graph.contains_key("controllers::service"),
        "the scan sees the kinds: {graph:?}"
    );
}

#[test]
fn the_checker_sees_imports_in_every_form() {
    let m = Module {
        file: PathBuf::from(ROOT).join("src/controllers/service/plan.rs"),
        path: vec!["controllers".into(), "service".into(), "plan".into()],
        text: "use super::super::pve::{self, guest::X};\nuse crate::controllers::{kit::Y, proxmox_cluster::Z};\n\
               // crate::controllers::runtime in a comment does not count\nfn f() { super::health::g(); }"
            .into(),
    };
    let areas: BTreeSet<String> = internal_paths(&m).iter().map(|p| area(p)).collect();
    let expected: BTreeSet<String> = [
        "controllers::pve",
        "controllers::kit",
        "controllers::proxmox_cluster",
        "controllers::service",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(areas, expected);
}
