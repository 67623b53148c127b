//! The contract this test pins: `src/` is one folder per layer and every `crate::`
//! path points down the layers, never up or sideways (STYLE.md, "A layout that shows
//! the architecture"). A file that reaches against the direction fails the test,
//! named with its line; so does a top-level module missing from the map below.
//! Code after `#[cfg(test)]` is not read: unit tests may use what they like.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each layer and the layers it may use, from the bottom up. A layer may use only
/// layers listed before it, so the map itself holds no circle.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("config", &["model"]),
    ("observe", &["model"]),
    ("registry", &["model", "config"]),
    ("gate", &["model", "config", "observe", "registry"]),
    ("edge", &["model", "config", "observe", "registry", "gate"]),
    (
        "compliance",
        &["model", "config", "observe", "registry", "gate"],
    ),
    // The webhook goes out over the same outbound connector as the upstream pools.
    (
        "notify",
        &["model", "config", "observe", "registry", "gate", "edge"],
    ),
    (
        "admin",
        &[
            "model",
            "config",
            "observe",
            "registry",
            "gate",
            "edge",
            "compliance",
            "notify",
        ],
    ),
    (
        "app",
        &[
            "model",
            "config",
            "observe",
            "registry",
            "gate",
            "edge",
            "compliance",
            "notify",
            "admin",
        ],
    ),
];

/// The root files that draw the map and run the CLI, not layers themselves.
const ROOT_FILES: [&str; 2] = ["lib.rs", "main.rs"];

/// One import against the direction.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: layer `{}` may not use `{}` (allowed: {})",
            self.file,
            self.line,
            self.from,
            self.to,
            allowed(&self.from).map_or("nothing".into(), |a| a.join(", "))
        )
    }
}

fn allowed(layer: &str) -> Option<&'static [&'static str]> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == layer)
        .map(|(_, uses)| *uses)
}

/// The top-level module names a line's `crate::` paths reach: `crate::a::b`,
/// `crate::a`, and each member of a grouped `crate::{a::x, b}`.
fn targets(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                let name = member.trim().split("::").next().unwrap_or("");
                found.push(name.to_string());
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

/// Every import against the direction in one file of layer `layer`.
fn check_file(file: &str, layer: &str, text: &str) -> Vec<Violation> {
    let uses = allowed(layer).unwrap_or(&[]);
    let known: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
    let mut violations = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        for target in targets(line) {
            let is_layer = known.contains(target.as_str());
            if is_layer && target != layer && !uses.contains(&target.as_str()) {
                violations.push(Violation {
                    file: file.to_string(),
                    line: index + 1,
                    from: layer.to_string(),
                    to: target,
                });
            }
        }
    }
    violations
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layer a file under `src/` belongs to: its first path component.
fn layer_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn every_import_points_down_the_layers() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&root).expect("under src");
        if ROOT_FILES.iter().any(|f| relative == Path::new(f)) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("readable source");
        let shown = format!("src/{}", relative.display());
        violations.extend(check_file(&shown, &layer_of(relative), &text));
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "\n{}", report.join("\n"));
}

#[test]
fn every_top_level_module_is_a_layer_of_the_map() {
    let mut unplaced = Vec::new();
    for entry in std::fs::read_dir(src()).expect("src").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ROOT_FILES.contains(&name.as_str()) {
            continue;
        }
        let module = name.trim_end_matches(".rs").to_string();
        if allowed(&module).is_none() {
            unplaced.push(module);
        }
    }
    assert!(
        unplaced.is_empty(),
        "top-level modules missing from the layer map in tests/layers.rs: {unplaced:?}"
    );
}

#[test]
fn the_layer_map_holds_no_circle() {
    for (position, (layer, uses)) in LAYERS.iter().enumerate() {
        let below: Vec<&str> = LAYERS[..position].iter().map(|(name, _)| *name).collect();
        for used in *uses {
            assert!(
                below.contains(used),
                "{layer} uses {used}, which is not below it"
            );
        }
    }
}

#[test]
fn a_planted_upward_import_fails_naming_file_and_line() {
    let text = "//! A pure module.\n\nuse std::sync::Arc;\nuse crate::app::start;\n";
    let found = check_file("src/model/host.rs", "model", text);
    assert_eq!(
        found,
        vec![Violation {
            file: "src/model/host.rs".into(),
            line: 4,
            from: "model".into(),
            to: "app".into(),
        }]
    );
    assert!(found[0]
        .to_string()
        .starts_with("src/model/host.rs:4: layer `model` may not use `app`"));
}

#[test]
fn sideways_grouped_and_inline_paths_are_caught() {
    // (the file's layer, its text, the (line, layer) of each violation)
    type Case = (&'static str, &'static str, Vec<(usize, &'static str)>);
    let table: [Case; 6] = [
        // A grouped import: each member is read.
        (
            "gate",
            "use crate::{model::host::HostName, edge::proxy};",
            vec![(1, "edge")],
        ),
        // A path used inline, not imported.
        (
            "registry",
            "let m = crate::observe::metrics::Metrics::new();",
            vec![(1, "observe")],
        ),
        // Sideways between siblings above gate.
        (
            "compliance",
            "use crate::edge::proxy::Gate;",
            vec![(1, "edge")],
        ),
        // Down the layers: allowed.
        (
            "admin",
            "use crate::registry::Registry;\nuse crate::gate::GateState;",
            vec![],
        ),
        // Within the layer itself: allowed.
        ("edge", "use crate::edge::forward;", vec![]),
        // Unit tests below `#[cfg(test)]` are not read.
        (
            "model",
            "fn f() {}\n#[cfg(test)]\nuse crate::app::start;",
            vec![],
        ),
    ];
    for (layer, text, want) in table {
        let found: Vec<(usize, String)> = check_file("src/x.rs", layer, text)
            .into_iter()
            .map(|v| (v.line, v.to))
            .collect();
        let want: Vec<(usize, String)> = want.into_iter().map(|(l, t)| (l, t.into())).collect();
        assert_eq!(found, want, "{layer}: {text}");
    }
}
