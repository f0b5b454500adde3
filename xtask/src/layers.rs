//! `cargo xtask layers`: the workspace keeps the layering ARCHITECTURE.md describes.
//!
//! - The store (`keygate-store`: database, domain operations) is its own crate, so the compiler
//!   keeps it from naming the control plane's HTTP layer. This check adds what the compiler
//!   does not: the store depends on no HTTP crate, directly or through another crate, and
//!   names none in its source.
//! - Neither the store's nor the control plane's modules form an import cycle.
//!
//! The module graph is read from the source: every `crate::`, `super::` and `self::` path
//! outside comments, resolved to the file-level module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Crates the store must not use, by their names in code.
const HTTP_CRATES: [&str; 4] = ["actix_web", "actix_http", "awc", "hyper"];

/// Checks the sources of `store/src` and `control-plane/src`, and the store's dependency tree.
pub fn check(root: &Path) -> Result<()> {
    let mut problems = check_sources(root)?;
    problems.extend(store_dependencies(root)?);
    report(problems)
}

/// The checks that read only the sources (no cargo run).
pub fn check_sources(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (krate, dir, is_store) in [
        ("keygate-store", "store/src", true),
        ("keygate-control-plane", "control-plane/src", false),
    ] {
        let files = read_tree(&root.join(dir))?;
        for p in problems_in(&files, is_store) {
            problems.push(format!("{krate}: {p}"));
        }
        eprintln!("xtask: layers: {krate}: {} modules read", files.len());
    }
    Ok(problems)
}

fn report(problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        eprintln!("xtask: layers: no import cycle, and the store uses no HTTP crate");
        return Ok(());
    }
    for p in &problems {
        eprintln!("xtask: layers: {p}");
    }
    bail!(
        "the workspace's layering is broken ({} problems)",
        problems.len()
    )
}

/// The store's normal dependencies, transitively, with the features the control plane turns
/// on: none may be an HTTP crate.
fn store_dependencies(root: &Path) -> Result<Vec<String>> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "tree",
            "-p",
            "keygate-store",
            "--features",
            "openapi",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    Ok(http_crates_in_tree(&tree))
}

fn http_crates_in_tree(tree: &str) -> Vec<String> {
    let mut found = BTreeSet::new();
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if HTTP_CRATES.iter().any(|c| c.replace('_', "-") == name) {
            found.insert(format!("keygate-store depends on the HTTP crate {name}"));
        }
    }
    found.into_iter().collect()
}

/// Every `.rs` file under `src` as (module path, source); `lib.rs` is the crate root (empty
/// path), `a/mod.rs` is `a`.
fn read_tree(src: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .context("a file outside src")?
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            // The binary's entry point is not a module of the library.
            if parts == ["main"] {
                continue;
            }
            if parts == ["lib"] {
                parts.clear();
            }
            let text = fs::read_to_string(&path)?;
            out.insert(parts.join("::"), text);
        }
    }
    Ok(out)
}

/// The source without comments and string literals, so that neither a doc link nor a message
/// counts as a dependency.
fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The paths a source names from `prefix` (`crate`, `super`, `self`), with `{a, b::c}` groups
/// expanded one level: `crate::x::y`, `crate::{a, b}` give `x::y`, `a`, `b`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let pat = format!("{prefix}::");
    let mut rest = code;
    while let Some(at) = rest.find(&pat) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + pat.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                if !item.is_empty() {
                    out.push(path_head(item));
                }
            }
        } else {
            out.push(path_head(rest));
        }
    }
    out
}

fn path_head(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect::<String>()
        .trim_end_matches(':')
        .to_owned()
}

/// The longest module of `modules` that `path` (from the crate root) starts with.
fn resolve(modules: &BTreeSet<&str>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|cand| modules.contains(cand.as_str()))
}

/// The module graph: for each module, the other modules it names.
fn graph(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    let mut g = BTreeMap::new();
    for (module, src) in files {
        let code = code_only(src);
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut deps = BTreeSet::new();
        let from_root = paths_after(&code, "crate").into_iter();
        let from_parent = paths_after(&code, "super")
            .into_iter()
            .map(|p| join(parent, &p));
        let from_self = paths_after(&code, "self")
            .into_iter()
            .map(|p| join(module, &p));
        for path in from_root.chain(from_parent).chain(from_self) {
            if let Some(target) = resolve(&modules, &path) {
                // A module naming its own items or its submodules is not a dependency.
                let inside = target == *module
                    || target.starts_with(&format!("{module}::"))
                    || module.is_empty();
                // The crate root and a parent `mod.rs` only declare their children.
                let declares = module.starts_with(&format!("{target}::")) || target.is_empty();
                if !inside && !declares {
                    deps.insert(target);
                }
            }
        }
        g.insert(module.clone(), deps);
    }
    g
}

fn join(base: &str, path: &str) -> String {
    if base.is_empty() {
        path.to_owned()
    } else {
        format!("{base}::{path}")
    }
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        g: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(lw));
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut walk = Walk {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out
}

/// Every breach of the rules in one crate's modules, as a sentence.
fn problems_in(files: &BTreeMap<String, String>, is_store: bool) -> Vec<String> {
    let g = graph(files);
    let mut out = Vec::new();
    for comp in cycles(&g) {
        let edges: Vec<String> = comp
            .iter()
            .flat_map(|a| {
                g[a].iter()
                    .filter(|b| comp.contains(b))
                    .map(move |b| format!("{a} → {b}"))
            })
            .collect();
        out.push(format!(
            "import cycle among {}: {}",
            comp.join(", "),
            edges.join(", ")
        ));
    }
    if is_store {
        for (module, src) in files {
            let code = code_only(src);
            for krate in HTTP_CRATES {
                if !paths_after(&code, krate).is_empty() {
                    out.push(format!(
                        "the store module {module} uses the HTTP crate {krate}"
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(m, s)| ((*m).to_owned(), (*s).to_owned()))
            .collect()
    }

    #[test]
    fn a_cycle_through_groups_and_super_is_found() {
        let files = tree(&[
            ("", "pub mod auth; pub mod domain; pub mod state;"),
            ("auth", "use crate::{state::AppState, domain::accounts};"),
            ("state", "use crate::auth::Cache;"),
            ("domain", "pub mod accounts; pub mod audit;"),
            (
                "domain::accounts",
                "use super::audit; fn f() { audit::x() }",
            ),
            (
                "domain::audit",
                "// crate::auth is only named in a comment\nconst S: &str = \"crate::state\";",
            ),
        ]);
        let p = problems_in(&files, false);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("auth, state"), "{p:?}");
    }

    #[test]
    fn the_store_may_not_use_an_http_crate() {
        let files = tree(&[
            ("", "pub mod domain;"),
            ("domain", "pub mod webhooks;"),
            (
                "domain::webhooks",
                "fn f(r: actix_web::HttpRequest) {} // awc::Client in a comment",
            ),
        ]);
        let p = problems_in(&files, true);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("actix_web"), "{p:?}");
        // The control plane may.
        assert!(problems_in(&files, false).is_empty());
        let tree = "keygate-store v0.1.0 (/w/store)\ndiesel v2.3.0\nawc v3.5.0\nserde v1.0.0\n";
        assert_eq!(
            http_crates_in_tree(tree),
            ["keygate-store depends on the HTTP crate awc"]
        );
    }

    #[test]
    fn the_workspace_is_layered() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let problems = check_sources(&root).expect("reading the sources");
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
