//! Each crate's modules form layers (see the `//!` "Layers" section of the gateway's
//! `src/lib.rs`): a module imports only modules below it. This test reads every file
//! under each crate's `src/`, draws the graph of `crate::…` and `super::…` imports
//! between modules (test code and a child's imports of its own ancestors left out; a
//! parent holds its children), and fails on any import loop but the one the gateway's
//! `lib.rs` explains: `routes` and `openapi`, because the router serves the document
//! that is built from its own list of routes.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The loops that may stay, by top-level module, each with the reason in its modules'
/// `//!` docs.
const EXPLAINED: &[&[&str]] = &[&["openapi", "routes"]];

#[test]
fn the_gateway_modules_import_only_downward() {
    check_layers("gateway", EXPLAINED);
}

#[test]
fn the_workers_shared_and_cli_modules_have_no_import_loop() {
    for krate in ["workers", "shared", "cli"] {
        check_layers(krate, &[]);
    }
}

fn check_layers(krate: &str, explained: &[&[&str]]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let modules = read_modules(&src, &src);
    assert!(
        modules.len() > 8,
        "{krate}: too few modules found: {modules:?}"
    );
    let names: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = modules
        .iter()
        .map(|(name, text)| (name.as_str(), imports(name, text, &names)))
        .collect();
    // A module holds its children (`mod child;`): naming it depends on them too.
    for child in &names {
        if let Some((parent, _)) = child.rsplit_once("::") {
            edges.entry(parent).or_default().insert(child);
        } else if !child.is_empty() {
            edges.entry("").or_default().insert(child);
        }
    }
    let loops = loops(&edges);
    // A loop is explained when all of its modules sit in the trees of one explained
    // loop's modules (the router's files and the document's files).
    let top = |m: &str| m.split("::").next().unwrap_or_default().to_string();
    let unexplained: Vec<_> = loops
        .iter()
        .filter(|l| {
            !explained
                .iter()
                .any(|allowed| l.iter().all(|m| allowed.contains(&top(m).as_str())))
        })
        .collect();
    let report: Vec<String> = unexplained
        .iter()
        .map(|l| {
            let lines: Vec<String> = l
                .iter()
                .map(|m| {
                    let inside: Vec<&str> =
                        edges[m].iter().copied().filter(|t| l.contains(t)).collect();
                    format!("  {m} -> {inside:?}")
                })
                .collect();
            format!("{:?}\n{}", l, lines.join("\n"))
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "import loops between {krate} modules (move the shared name down a layer):\n{}",
        report.join("\n")
    );
}

/// The test catches a loop: two modules that name each other.
#[test]
fn a_loop_is_found() {
    let names: BTreeSet<&str> = ["a", "b", "c"].into();
    let a = imports("a", "use crate::{b::Thing, c};", &names);
    let b = imports(
        "b",
        "fn f() { crate::a::g() }\n#[cfg(test)]\nmod tests { use crate::c; }",
        &names,
    );
    let c = imports("c", "// use crate::a;", &names);
    assert_eq!(a, ["b", "c"].into());
    assert_eq!(b, ["a"].into());
    assert!(c.is_empty());
    let nested: BTreeSet<&str> = ["c", "ops", "ops::x", "ops::y"].into();
    assert_eq!(
        imports(
            "ops::x",
            "use super::{y::f, x::g}; fn h() { super::super::c::k() }",
            &nested
        ),
        ["c", "ops::y"].into()
    );
    let edges = BTreeMap::from([("a", a), ("b", b), ("c", c)]);
    assert_eq!(loops(&edges), vec![BTreeSet::from(["a", "b"])]);
}

/// Every module's text, by its path in the crate (`routes::jobs`; `lib.rs` is "").
fn read_modules(dir: &Path, src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(read_modules(&path, src));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path
            .strip_prefix(src)
            .expect("under src")
            .with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        let text = std::fs::read_to_string(&path).expect("read");
        out.insert(parts.join("::"), text);
    }
    out
}

/// The modules `module` imports: each `crate::…` path in its non-test code, mapped to
/// the longest module it names, leaving out itself and its own ancestors (a child naming
/// its parent's items is how a module's files share them).
fn imports<'a>(module: &str, text: &str, names: &BTreeSet<&'a str>) -> BTreeSet<&'a str> {
    // A file's unit tests (`#[cfg(test)] mod …`, last by habit) may import anything.
    let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or_default();
    let code: String = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    for (root, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(root) {
            let tail = &rest[at + root.len()..];
            // `super::` inside a longer word, or a second `super::` of a chain, is read
            // with the first.
            let before = rest[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                rest = tail;
                continue;
            }
            let mut base = base.clone();
            let mut tail_path = tail;
            while let Some(up) = tail_path.strip_prefix("super::") {
                base.pop();
                tail_path = up;
            }
            let is_use = rest[..at].trim_end().ends_with("use");
            if is_use {
                let end = tail_path.find(';').unwrap_or(tail_path.len());
                expand(&mut paths, base, &tail_path[..end]);
            } else {
                let end = tail_path
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(tail_path.len());
                let mut path = base;
                path.push(tail_path[..end].trim_end_matches(':').to_string());
                paths.push(path.join("::"));
            }
            rest = tail;
        }
    }
    paths
        .iter()
        .filter_map(|path| {
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find_map(|candidate| names.get(candidate.as_str()).copied())
        })
        .filter(|target| {
            *target != module && !module.starts_with(&format!("{target}::")) && !target.is_empty()
        })
        .collect()
}

/// The path of the module `super` names in `module`.
fn parent(module: &str) -> Vec<String> {
    let mut parts: Vec<String> = module.split("::").map(str::to_string).collect();
    parts.pop();
    parts
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into full paths under `prefix`.
fn expand(out: &mut Vec<String>, prefix: Vec<String>, tree: &str) {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(out, prefix.clone(), &inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(out, prefix, &inner[start..]);
        return;
    }
    match tree.split_once("::") {
        Some((head, rest)) => {
            let mut prefix = prefix;
            prefix.push(head.trim().to_string());
            expand(out, prefix, rest);
        }
        None => {
            let name: String = tree
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                let mut path = prefix;
                path.push(name);
                out.push(path.join("::"));
            }
        }
    }
}

/// The sets of two or more modules that reach each other through imports.
fn loops<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<BTreeSet<&'a str>> {
    let reach = |from: &'a str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(m) = todo.pop() {
            for next in edges.get(m).into_iter().flatten() {
                if seen.insert(*next) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&str, BTreeSet<&str>> = edges.keys().map(|m| (*m, reach(m))).collect();
    let mut out: Vec<BTreeSet<&str>> = Vec::new();
    for (m, from_m) in &reached {
        let group: BTreeSet<&str> = from_m
            .iter()
            .copied()
            .filter(|other| reached.get(other).is_some_and(|r| r.contains(m)))
            .collect();
        if group.len() > 1 && !out.contains(&group) {
            out.push(group);
        }
    }
    out
}
