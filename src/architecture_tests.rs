//! The architecture, checked, so that the maps a newcomer reads first stay true.
//!
//! - **The layering rule**: every `crate::` path in a module's code names a module of its
//!   own layer or of one below it (docs/architecture.md). A lower layer that imports a
//!   higher one fails `cargo test`, and so CI. Comments are not code: a doc line may name
//!   a module above (`crate::http::auth` in `auth`'s docs, say) without depending on it.
//! - **The maps**: every path the README's layout names exists, every file of `src/`
//!   and of the store is on it, and `lib.rs`'s Layout names every module.

use std::collections::BTreeSet;
use std::path::Path;

/// What each top-level module may name, besides itself. Ordered from the bottom up:
/// `domain` knows nothing; the store knows the domain; the application knows the store's
/// ports; the edges (HTTP, the command line) and the wiring know what they assemble.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("telemetry", &[]),
    ("secret", &[]),
    ("clock", &["domain"]),
    ("auth", &["domain", "telemetry", "secret"]),
    ("store", &["domain", "clock", "telemetry", "secret"]),
    (
        "app",
        &["domain", "store", "auth", "clock", "telemetry", "secret"],
    ),
    (
        "http",
        &[
            "app",
            "domain",
            "store",
            "auth",
            "clock",
            "telemetry",
            "secret",
        ],
    ),
    (
        "config",
        &[
            "http",
            "store",
            "auth",
            "domain",
            "clock",
            "telemetry",
            "secret",
        ],
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
            "secret",
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
            "secret",
        ],
    ),
];

/// The top-level modules that `source`, a module `depth` levels below the crate root,
/// names through paths from the root, comments left out: `crate::store::X`, each branch
/// of `use crate::{store::X, domain}`, and `super::` chains that climb to the root.
fn named_modules(source: &str, depth: usize) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
        .replace(&"super::".repeat(depth.max(1)), "crate::");
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
    // Only modules count: an item of the crate root would be no layer.
    named.retain(|name| ALLOWED.iter().any(|(layer, _)| layer == name));
    named
}

/// How many modules deep `file` is: `src/config.rs` 1, `src/store/mod.rs` 1,
/// `src/store/cassandra/rows.rs` 3.
fn module_depth(src: &Path, file: &Path) -> usize {
    let relative = file.strip_prefix(src).expect("a file under src");
    let parts = relative.components().count();
    if file.file_stem().is_some_and(|stem| stem == "mod") {
        parts - 1
    } else {
        parts
    }
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
            for named in named_modules(&source, module_depth(src, &file)) {
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
    let lib = repository_file("src/lib.rs");
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
        ("use super::super::cli::Args;", "cli"),
    ] {
        std::fs::write(domain.join("a.rs"), form).unwrap();
        let edges = back_edges(dir.path());
        assert_eq!(edges.len(), 1, "{form}: {edges:?}");
        assert_eq!(edges[0].1, names, "{form}");
    }
}

// ----- the maps -----

fn repository_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|err| panic!("read {path}: {err}"))
}

/// The README's layout tree: the fenced block after `## Layout`.
fn readme_tree() -> String {
    let readme = repository_file("README.md");
    let layout = readme
        .split("## Layout")
        .nth(1)
        .expect("the README has a Layout section");
    layout
        .split("```")
        .nth(1)
        .expect("the Layout section has a tree")
        .to_owned()
}

#[test]
fn every_path_on_the_readme_tree_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tree = readme_tree();
    let missing: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|path| path.contains('/') || path.ends_with(".toml"))
        .filter(|path| !root.join(path).exists())
        .collect();
    assert!(missing.is_empty(), "the README's layout names {missing:?}");
}

#[test]
fn every_source_file_and_store_file_is_on_the_readme_tree() {
    let tree = readme_tree();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut absent = Vec::new();
    for dir in ["", "store"] {
        for entry in std::fs::read_dir(src.join(dir)).expect("read src") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "mod.rs" || name == "architecture_tests.rs" {
                continue;
            }
            let shown = if dir.is_empty() {
                format!("src/{name}")
            } else {
                format!("src/{dir}/{name}")
            };
            let shown = if path.is_dir() {
                format!("{shown}/")
            } else {
                shown
            };
            if !tree.contains(&shown) {
                absent.push(shown);
            }
        }
    }
    // These lines list their files by stem (a subcommand's with `-` for `_`):
    // `mod · event_log · rows · ...`, `(serve, migrate, set-role, ...)`.
    for dir in ["cli", "store/embedded", "store/cassandra"] {
        let line = tree
            .lines()
            .find(|l| l.starts_with(&format!("src/{dir}/")))
            .unwrap_or_else(|| panic!("no line for src/{dir}/"));
        for file in rust_files(&src.join(dir)) {
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            if stem == "mod" {
                continue;
            }
            let listed = line
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
                .any(|word| word == stem || word == stem.replace('_', "-"));
            if !listed {
                absent.push(format!("src/{dir}/{stem}.rs"));
            }
        }
    }
    assert!(absent.is_empty(), "not on the README's layout: {absent:?}");
}

#[test]
fn the_crate_docs_name_every_module() {
    let lib = repository_file("src/lib.rs");
    let docs: String = lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let unnamed: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .filter(|m| !docs.contains(&format!("[`{m}`]")))
        .collect();
    assert!(unnamed.is_empty(), "lib.rs's Layout leaves out {unnamed:?}");
}
