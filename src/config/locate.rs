//! Locating keys in the TOML text, so every error names the file, the line and the
//! key: a toml error's byte span becomes `line:column` and the dotted key there; a
//! validation problem's key becomes the line it is written on (or its section's).

use std::path::Path;

use super::ConfigError;

/// Keys whose values may hold a secret: their parse errors never quote the value
/// (a toml type error does: "invalid type: integer `123`").
const SECRET_KEYS: [&str; 3] = ["notify.secret", "notify.url", "registry.url"];

/// Turns a toml error into `Parse` with line/column; `shape` errors (the syntax
/// was fine) are prefixed with the key they concern.
pub(super) fn parse_error(
    text: &str,
    path: &Path,
    e: &toml::de::Error,
    shape: bool,
) -> ConfigError {
    let offset = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, offset);
    let message = e.message().trim().to_owned();
    let message = match key_at(text, offset).filter(|_| shape) {
        Some(key) if SECRET_KEYS.contains(&key.as_str()) => {
            format!("{key}: invalid value (not shown: it may hold a secret); expected a string")
        }
        Some(key) => with_key(&key, message),
        None => message,
    };
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// `unknown field `x`, expected ...` → `unknown field `x` in [section], expected ...`;
/// anything else → `key: message`.
fn with_key(key: &str, message: String) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return format!("{key}: {message}");
    };
    let section = match key.rsplit_once('.') {
        Some((parent, _)) => format!("in [{parent}]"),
        None => "at top level".to_owned(),
    };
    match rest.split_once('`') {
        Some((field, tail)) => format!("unknown field `{field}` {section}{tail}"),
        None => format!("{message} ({section})"),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// One line of TOML, as far as locating keys needs.
enum LineKind {
    /// `[a.b]` or `[[a.b]]`
    Header(String),
    /// `key = ...` (dotted keys joined)
    Key(String),
    Other,
}

fn classify(line: &str) -> LineKind {
    let t = line.trim();
    if let Some(h) = t.strip_prefix('[') {
        let h = h.trim_start_matches('[');
        return match h.split_once(']') {
            Some((name, _)) => LineKind::Header(normalise_key(name)),
            None => LineKind::Other,
        };
    }
    if t.starts_with('#') {
        return LineKind::Other;
    }
    match t.split_once('=') {
        Some((k, _)) if looks_like_key(k) => LineKind::Key(normalise_key(k)),
        _ => LineKind::Other,
    }
}

/// Bare or quoted key characters with balanced quotes, so an `=` inside a
/// string on a continuation line is not taken for a key.
fn looks_like_key(k: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || " \t_-.\"'".contains(c);
    !k.trim().is_empty()
        && k.chars().all(allowed)
        && k.matches('"').count() % 2 == 0
        && k.matches('\'').count() % 2 == 0
}

/// `a . "b"` → `a.b` (best effort: quoted keys containing dots are rare here).
fn normalise_key(k: &str) -> String {
    k.split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

fn join_key(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// The dotted key whose header or value sits at byte `offset`. A value spanning
/// several lines (an array) belongs to the last `key =` above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let target = line_col(text, offset).0;
    let mut table = String::new();
    let mut last_key = None;
    for (i, line) in text.lines().enumerate() {
        let here = i + 1 == target;
        match classify(line) {
            LineKind::Header(h) if here => return Some(h),
            LineKind::Header(h) => {
                table = h;
                last_key = None;
            }
            LineKind::Key(k) => last_key = Some(join_key(&table, &k)),
            LineKind::Other => {}
        }
        if here {
            return last_key;
        }
    }
    None
}

/// 1-based line where the dotted `key` (or the section `key`) is written.
pub(super) fn locate_key(text: &str, key: &str) -> Option<usize> {
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let full = match classify(line) {
            LineKind::Header(h) => {
                table = h;
                table.clone()
            }
            LineKind::Key(k) => join_key(&table, &k),
            LineKind::Other => continue,
        };
        if full == key {
            return Some(i + 1);
        }
    }
    None
}

/// Line of the section holding `key`, for a key that is not written (a missing
/// required value).
pub(super) fn locate_parent(text: &str, key: &str) -> Option<usize> {
    let (parent, _) = key.rsplit_once('.')?;
    locate_key(text, parent)
}
