//! Named admin tokens (`admin.tokens_file`): one bearer token per person or system,
//! so the filing history records who made each change instead of what a shared
//! token's holder chose to claim in `X-Icpgate-Actor`.
//!
//! The file holds one `NAME SHA256 [GRANTS]` line per caller: the name recorded as
//! the actor, the lowercase hex SHA-256 of that caller's token (the token itself is
//! never stored; make one with `printf %s "$TOKEN" | sha256sum`), and optionally
//! what else the caller may do, comma-separated: `reveal` lets it see personal data
//! in clear on request (`?reveal=true`, audited; see `admin::privacy`). `#` starts a comment;
//! blank lines are ignored. A name is 1–64 of `A-Z a-z 0-9 . _ @ -`; names and
//! tokens are unique. Any bad line refuses the whole file, naming its line — and
//! never quoting it: a line that is wrong is often a raw token pasted where its hash
//! belongs.
//!
//! The shared token (`admin.token_file` or `admin.token_env`) must be at least
//! [`MIN_TOKEN_CHARS`] characters; a shorter one is refused at start, by `config
//! check` and on reload, naming where it came from and never the token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use sha2::{Digest, Sha256};

use crate::config::AdminConfig;

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokensFileError {
    /// The shared token's file (`admin.token_file`) cannot be read.
    #[error("admin.token_file {path}: {message}")]
    TokenFile { path: PathBuf, message: String },
    #[error("admin.tokens_file {path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("admin.tokens_file {path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The shared token is too short to resist guessing; `source` says where it
    /// came from (a file or an environment variable), never what it is.
    #[error("the admin token from {origin} is shorter than {MIN_TOKEN_CHARS} characters: use a long random one, e.g. `openssl rand -hex 32`")]
    TooShort { origin: String },
    /// The admin listener is reachable from other hosts and nothing guards it.
    #[error("listen.admin = \"{addr}\" is not a loopback address and no admin token is configured: {how}, or listen on 127.0.0.1")]
    Exposed { addr: SocketAddr, how: String },
}

/// Refuse an admin listener on a non-loopback address when no token is configured:
/// its reads would be refused anyway, but an operator who meant to set a token
/// learns at start, not from an open port.
pub fn check_exposure(
    listen: Option<SocketAddr>,
    loaded: &LoadedTokens,
) -> Result<(), TokensFileError> {
    match listen {
        Some(addr) if !addr.ip().to_canonical().is_loopback() && !loaded.is_configured() => {
            Err(TokensFileError::Exposed {
                addr,
                how: loaded.source.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// The fewest characters a shared admin token may have.
pub const MIN_TOKEN_CHARS: usize = 32;

/// One caller: the actor name and the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamedToken {
    name: String,
    sha256: [u8; 32],
    /// Whether it may reveal personal data (the `reveal` grant).
    may_reveal: bool,
    /// Where it is written, for the message about a duplicate.
    line: usize,
}

/// Who called a write endpoint of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The shared token (`admin.token_env` / `admin.token_file`): the actor is what
    /// the caller says in `X-Icpgate-Actor`, else "admin".
    Shared,
    /// A named token: the actor is its name, whatever the request claims.
    Named(String),
}

/// The named tokens in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedTokens {
    tokens: Vec<NamedToken>,
}

impl NamedTokens {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<NamedTokens, TokensFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokensFileError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        NamedTokens::parse(&text).map_err(|(line, message)| TokensFileError::Line {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// Parse a file's text; an error is its 1-based line and what is wrong.
    pub fn parse(text: &str) -> Result<NamedTokens, (usize, String)> {
        let mut tokens: Vec<NamedToken> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let (name, hash, grants) = match fields[..] {
                [name, hash] => (name, hash, ""),
                [name, hash, grants] => (name, hash, grants),
                _ => {
                    return Err((
                        line,
                        format!(
                            "expected `NAME SHA256 [GRANTS]`, found {} field(s)",
                            fields.len()
                        ),
                    ))
                }
            };
            check_name(name).map_err(|message| (line, message))?;
            let sha256 = parse_sha256(hash).map_err(|message| (line, message))?;
            let may_reveal = parse_grants(grants).map_err(|message| (line, message))?;
            if let Some(first) = tokens.iter().find(|t| t.name == name) {
                return Err((
                    line,
                    format!("this name is already used on line {}", first.line),
                ));
            }
            if let Some(first) = tokens.iter().find(|t| t.sha256 == sha256) {
                return Err((
                    line,
                    format!(
                        "this token hash is already given to the name on line {}",
                        first.line
                    ),
                ));
            }
            tokens.push(NamedToken {
                name: name.to_string(),
                sha256,
                may_reveal,
                line,
            });
        }
        Ok(NamedTokens { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether the caller named `name` holds the `reveal` grant.
    pub fn may_reveal(&self, name: &str) -> bool {
        self.tokens.iter().any(|t| t.name == name && t.may_reveal)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The name whose token `presented` is. Every entry is compared in full, so the
    /// time taken does not tell which entry (or how much of one) matched.
    pub fn name_of(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            if constant_time_eq(&digest, &token.sha256) {
                found = Some(token.name.as_str());
            }
        }
        found
    }
}

/// The grants field: empty, or `reveal`. An unknown grant is described, not quoted.
fn parse_grants(grants: &str) -> Result<bool, String> {
    let mut reveal = false;
    for grant in grants.split(',').filter(|g| !g.is_empty()) {
        match grant {
            "reveal" => reveal = true,
            _ => {
                return Err("unknown grant in the third field; the known grant is `reveal`".into())
            }
        }
    }
    Ok(reveal)
}

/// A bad name is described, never quoted: it may be a token in the wrong field.
fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.len() > 64 {
        return Err("the name (first field) is longer than 64 characters".into());
    }
    if name.chars().any(|c| !allowed(c)) {
        return Err("the name (first field) has a character outside A-Z a-z 0-9 . _ @ -".into());
    }
    Ok(())
}

/// A bad hash is described, never quoted: it is most often the raw token.
fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let not_a_hash = || {
        "the second field is not a SHA-256 in hex (64 characters; store the hash, not the \
         token: printf %s \"$TOKEN\" | sha256sum)"
            .to_string()
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_a_hash());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).ok_or_else(not_a_hash)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| not_a_hash())?;
    }
    Ok(out)
}

/// Who may write through the admin API. The shared bearer token comes from
/// `admin.token_file` when set, else from the environment variable
/// `admin.token_env`; named tokens from `admin.tokens_file`. A reload re-reads both
/// files, so tokens kept in files (mounted secrets) rotate without a restart.
pub struct AdminToken {
    token: ArcSwap<Option<String>>,
    named: ArcSwap<NamedTokens>,
    /// Where the token comes from, for the 403 that says how to set one.
    source: ArcSwap<String>,
}

/// Tokens read and checked, not yet in force (see [`AdminToken::install`]).
pub struct LoadedTokens {
    token: Option<String>,
    named: NamedTokens,
    source: String,
}

impl LoadedTokens {
    /// Read both token sources and check them; nothing is installed.
    pub fn read(config: &AdminConfig) -> Result<LoadedTokens, TokensFileError> {
        let token = read_token(config)?;
        let named = read_named_tokens(config)?;
        Ok(LoadedTokens {
            token,
            named,
            source: token_source(config),
        })
    }

    /// Whether any token is configured.
    pub fn is_configured(&self) -> bool {
        self.token.is_some() || !self.named.is_empty()
    }
}

impl AdminToken {
    pub fn load(config: &AdminConfig) -> Result<AdminToken, TokensFileError> {
        Ok(AdminToken::new(LoadedTokens::read(config)?))
    }

    /// Put tokens read by [`LoadedTokens::read`] in force, for the first time.
    pub fn new(loaded: LoadedTokens) -> AdminToken {
        warn_if_missing(&loaded);
        AdminToken {
            token: ArcSwap::from_pointee(loaded.token),
            named: ArcSwap::from_pointee(loaded.named),
            source: ArcSwap::from_pointee(loaded.source),
        }
    }

    /// Put tokens read by [`LoadedTokens::read`] in force.
    pub fn install(&self, loaded: LoadedTokens) {
        warn_if_missing(&loaded);
        self.token.store(Arc::new(loaded.token));
        self.named.store(Arc::new(loaded.named));
        self.source.store(Arc::new(loaded.source));
    }

    /// Whether any token is configured; without one, admin writes are refused.
    pub fn is_configured(&self) -> bool {
        self.token.load().is_some() || !self.named.load().is_empty()
    }

    /// Who presented `bearer`, if anyone may.
    pub fn caller(&self, bearer: &str) -> Option<Caller> {
        let named = self.named.load();
        let name = named.name_of(bearer).map(str::to_string);
        let shared = self
            .token
            .load()
            .as_deref()
            .is_some_and(|token| constant_time_eq(bearer.as_bytes(), token.as_bytes()));
        match (name, shared) {
            (Some(name), _) => Some(Caller::Named(name)),
            (None, true) => Some(Caller::Shared),
            (None, false) => None,
        }
    }

    /// Whether `caller` may reveal personal data: a named token with the `reveal`
    /// grant (the shared token names no one to audit, so it never may).
    pub fn may_reveal(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Named(name) => self.named.load().may_reveal(name),
            Caller::Shared => false,
        }
    }

    /// How an operator sets the token, for error messages.
    pub fn source(&self) -> Arc<String> {
        self.source.load_full()
    }

    /// Re-read the tokens; an unreadable or invalid file keeps the tokens in force.
    pub fn reload(&self, config: &AdminConfig) -> Result<(), TokensFileError> {
        self.install(LoadedTokens::read(config)?);
        Ok(())
    }
}

fn read_named_tokens(config: &AdminConfig) -> Result<NamedTokens, TokensFileError> {
    let Some(path) = &config.tokens_file else {
        return Ok(NamedTokens::default());
    };
    let named = NamedTokens::load(path)?;
    tracing::info!(file = %path.display(), names = named.len(), "named admin tokens loaded");
    Ok(named)
}

fn token_source(config: &AdminConfig) -> String {
    match &config.token_file {
        Some(file) => format!(
            "write it to {} (admin.token_file) and reload",
            file.display()
        ),
        None => format!(
            "set the environment variable {} and restart",
            config.token_env
        ),
    }
}

fn warn_if_missing(loaded: &LoadedTokens) {
    if !loaded.is_configured() {
        tracing::warn!(how = %loaded.source, "no admin token configured: the admin API answers only /healthz, /readyz and /metrics");
    }
}

fn read_token(config: &AdminConfig) -> Result<Option<String>, TokensFileError> {
    let text = match &config.token_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| TokensFileError::TokenFile {
            path: path.clone(),
            message: e.to_string(),
        })?,
        None => std::env::var(&config.token_env).unwrap_or_default(),
    };
    let token = text.trim();
    if token.is_empty() {
        return Ok(None);
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        let source = match &config.token_file {
            Some(path) => format!("admin.token_file {}", path.display()),
            None => format!(
                "the environment variable {} (admin.token_env)",
                config.token_env
            ),
        };
        return Err(TokensFileError::TooShort { origin: source });
    }
    Ok(Some(token.to_string()))
}

/// Compare without an early exit, so timing does not reveal a prefix of the token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, byte) in a.iter().enumerate() {
        diff |= usize::from(byte ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn files_parse_or_name_their_bad_line() {
        let alice = hash("alice-secret");
        let bot = hash("bot-secret");
        /// How many names the file holds, or the bad line and part of its message.
        type Expected = Result<usize, (usize, &'static str)>;
        let cases: Vec<(String, Expected)> = vec![
            // two callers, a comment and a blank line
            (
                format!("# staff\nalice {alice}\n\nbot@ci {bot}  # the portal\n"),
                Ok(2),
            ),
            // an empty file: no named tokens
            (String::new(), Ok(0)),
            // upper-case hex is accepted
            (format!("alice {}", alice.to_uppercase()), Ok(1)),
            // a token instead of its hash
            ("alice alice-secret".into(), Err((1, "is not a SHA-256"))),
            // a missing hash
            (format!("alice {alice}\nbob\n"), Err((2, "found 1 field"))),
            // a space in the name shifts the fields
            (format!("alice smith {alice}"), Err((1, "is not a SHA-256"))),
            (
                format!("alice smith {alice} reveal"),
                Err((1, "found 4 field")),
            ),
            // grants: `reveal`, and nothing unknown
            (format!("alice {alice} reveal"), Ok(1)),
            (format!("alice {alice} admin"), Err((1, "unknown grant"))),
            // a name with characters outside the set
            (format!("al/ice {alice}"), Err((1, "outside A-Z"))),
            // the same name twice
            (
                format!("alice {alice}\nalice {bot}"),
                Err((2, "already used on line 1")),
            ),
            // the same token for two names
            (
                format!("alice {alice}\nbob {alice}"),
                Err((2, "given to the name on line 1")),
            ),
            // a hash one character short
            (format!("alice {}", &alice[1..]), Err((1, "64 characters"))),
        ];
        for (text, expected) in cases {
            match (NamedTokens::parse(&text), expected) {
                (Ok(tokens), Ok(count)) => assert_eq!(tokens.len(), count, "{text}"),
                (Err((line, message)), Err((want_line, want))) => {
                    assert_eq!(line, want_line, "{text}: {message}");
                    assert!(message.contains(want), "{text}: {message}");
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_presented_token_finds_its_name_and_nothing_else_does() {
        let tokens = NamedTokens::parse(&format!(
            "alice {}\nbot@ci {}\n",
            hash("alice-secret"),
            hash("bot-secret")
        ))
        .expect("parse");
        assert_eq!(tokens.name_of("alice-secret"), Some("alice"));
        assert_eq!(tokens.name_of("bot-secret"), Some("bot@ci"));
        assert_eq!(tokens.name_of("alice-secreT"), None);
        assert!(!tokens.may_reveal("alice"), "no grant given");
        assert_eq!(tokens.name_of(""), None);
        assert_eq!(
            tokens.name_of(&hash("alice-secret")),
            None,
            "a hash is not its token"
        );
    }

    /// A raw token pasted into either field is never echoed by the message, which
    /// reaches `config check`'s output and the "reload refused" log line.
    #[test]
    fn a_bad_line_never_quotes_its_fields() {
        let alice = hash("alice");
        let secret = "Sup3rSecretRawToken/+=value-0123456789";
        let lines = [
            format!("alice {secret}"),
            format!("{secret} {alice}"),
            format!("{}x {alice}", secret.repeat(3)),
            format!("alice {alice} {secret}"),
            secret.to_string(),
        ];
        for text in lines {
            let (_, message) = NamedTokens::parse(&text).expect_err("refused");
            assert!(!message.contains("Sup3r"), "{message}");
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("tokens");
            std::fs::write(&path, &text).expect("write");
            let error = NamedTokens::load(&path).expect_err("refused").to_string();
            assert!(!error.contains("Sup3r"), "{error}");
            assert!(error.contains(&format!("{}:1:", path.display())), "{error}");
        }
    }

    #[test]
    fn a_short_shared_token_is_refused_naming_its_source_not_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        let short = "short-secret-token-31-characters";
        assert_eq!(short.len(), 32);
        let short = &short[1..];
        std::fs::write(&file, format!("{short}\n")).expect("write");
        let config = AdminConfig {
            token_file: Some(file.clone()),
            ..AdminConfig::default()
        };
        let error = AdminToken::load(&config)
            .err()
            .expect("a 31-character token is refused")
            .to_string();
        assert!(error.contains(&file.display().to_string()), "{error}");
        assert!(error.contains("shorter than 32"), "{error}");
        assert!(!error.contains(short), "{error}");
        std::fs::write(&file, "x".repeat(32)).expect("write");
        assert!(
            AdminToken::load(&config).is_ok(),
            "32 characters are enough"
        );
    }

    #[test]
    fn a_non_loopback_admin_listener_needs_a_token() {
        let none = LoadedTokens::read(&AdminConfig {
            token_env: "ICPGATE_UNIT_TEST_NEVER_SET".into(),
            ..AdminConfig::default()
        })
        .expect("no token is no error");
        let addr = |s: &str| Some(s.parse::<SocketAddr>().expect("addr"));
        for ok in ["127.0.0.1:9090", "[::1]:9090", "127.0.0.2:1"] {
            assert!(check_exposure(addr(ok), &none).is_ok(), "{ok}");
        }
        assert!(check_exposure(None, &none).is_ok(), "no admin listener");
        for exposed in ["0.0.0.0:9090", "[::]:9090", "10.0.0.5:9090"] {
            let error = check_exposure(addr(exposed), &none)
                .expect_err("refused")
                .to_string();
            assert!(error.contains("not a loopback address"), "{error}");
            assert!(error.contains("ICPGATE_UNIT_TEST_NEVER_SET"), "{error}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "t".repeat(40)).expect("write");
        let some = LoadedTokens::read(&AdminConfig {
            token_file: Some(file),
            ..AdminConfig::default()
        })
        .expect("token");
        assert!(check_exposure(addr("0.0.0.0:9090"), &some).is_ok());
    }

    #[test]
    fn an_unreadable_file_names_the_file() {
        let error = NamedTokens::load(Path::new("/nonexistent/tokens")).expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/tokens"), "{error}");
    }

    #[test]
    fn a_bad_file_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("alice {}\nbob nothex\n", hash("a"))).expect("write");
        let error = NamedTokens::load(&path).expect_err("bad line");
        let text = error.to_string();
        assert!(text.contains(&format!("{}:2:", path.display())), "{text}");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
