//! The layering rule, checked: every `crate::` path in a module's code names a module of
//! its own layer or of one below it (docs/architecture.md). A lower layer that imports a
//! higher one fails `cargo test`, and so CI.
//!
//! Comments are not code: a doc line may name a module above (`crate::http::auth` in
//! `auth`'s docs, say) without depending on it.

use std::collections::BTreeSet;
use std::path::Path;

/// What each top-level module may name, besides itself. Ordered from the bottom up:
/// `domain` knows nothing; the store knows the domain; the application knows the store's
/// ports; the edges (HTTP, the command line) and the wiring know what they assemble.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("telemetry", &[]),
    ("clock", &["domain"]),
    ("auth", &["domain", "telemetry"]),
    ("store", &["domain", "clock", "telemetry"]),
    ("app", &["domain", "store", "auth", "clock", "telemetry"]),
    (
        "http",
        &["app", "domain", "store", "auth", "clock", "telemetry"],
    ),
    (
        "config",
        &["http", "store", "auth", "domain", "clock", "telemetry"],
    ),
    (
        "startup",
        &[
            "config",
            "http",
            "app",
            "store",
            "auth",
            "domain",
            "clock",
            "telemetry",
        ],
    ),
    (
        "cli",
        &[
            "startup",
            "config",
            "app",
            "store",
            "auth",
            "domain",
            "clock",
            "telemetry",
        ],
    ),
];

/// The top-level modules that `source` names through `crate::` paths, comments left out:
/// `crate::store::X`, and each branch of `use crate::{store::X, domain}`.
fn named_modules(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut named = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A group: the first identifier of each top-level branch.
            let mut depth = 0;
            let mut branch_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => branch_start = true,
                    c if branch_start && (c.is_alphanumeric() || c == '_') => {
                        named.insert(identifier(&group[i..]));
                        branch_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            named.insert(identifier(rest));
        }
    }
    named
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every back edge under `src`: `(file, the module it names)`.
fn back_edges(src: &Path) -> Vec<(String, String)> {
    let mut edges = Vec::new();
    for (layer, allowed) in ALLOWED {
        let dir = src.join(layer);
        let files = if dir.is_dir() {
            rust_files(&dir)
        } else {
            vec![src.join(format!("{layer}.rs"))]
        };
        assert!(!files.is_empty(), "no source for layer {layer}");
        for file in files {
            let source = std::fs::read_to_string(&file).expect("read a source file");
            for named in named_modules(&source) {
                if named != *layer && !allowed.contains(&named.as_str()) {
                    edges.push((file.display().to_string(), named));
                }
            }
        }
    }
    edges
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = back_edges(&src);
    assert!(
        edges.is_empty(),
        "imports that point up (docs/architecture.md): {edges:#?}"
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read lib.rs");
    for line in lib.lines() {
        if let Some(module) = line.strip_prefix("pub mod ") {
            let module = module.trim_end_matches(';');
            assert!(
                ALLOWED.iter().any(|(layer, _)| *layer == module),
                "module {module} has no place in the layering rule"
            );
        }
    }
}

#[test]
fn the_check_sees_a_back_edge_in_any_form() {
    let dir = tempfile::tempdir().unwrap();
    let domain = dir.path().join("domain");
    std::fs::create_dir(&domain).unwrap();
    for (layer, _) in ALLOWED.iter().filter(|(l, _)| *l != "domain") {
        std::fs::write(dir.path().join(format!("{layer}.rs")), "").unwrap();
    }
    let clean = "//! Mentions `crate::http::auth` in a comment only.\nuse crate::domain::x;\n";
    std::fs::write(domain.join("a.rs"), clean).unwrap();
    assert!(back_edges(dir.path()).is_empty());

    for (form, names) in [
        ("use crate::http::Limits;", "http"),
        ("fn f() -> crate::store::StoreError { todo!() }", "store"),
        ("use crate::{domain::x, app::{y, z}};", "app"),
    ] {
        std::fs::write(domain.join("a.rs"), form).unwrap();
        let edges = back_edges(dir.path());
        assert_eq!(edges.len(), 1, "{form}: {edges:?}");
        assert_eq!(edges[0].1, names, "{form}");
    }
}
