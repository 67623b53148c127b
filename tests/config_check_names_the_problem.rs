//! The contract these tests pin (issue 7, `icpgate config check`): the real binary
//! exits 0 on a valid file (the shipped `config/icpgate.toml` included) and non-zero
//! on a broken one, printing the file, the line and the key at fault.

mod common;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("icpgate.toml");
    std::fs::write(&path, text).expect("write");
    check_path(&path)
}

fn check_path(path: &std::path::Path) -> (i32, String) {
    let (code, text) = common::run_icpgate([
        std::ffi::OsStr::new("config"),
        std::ffi::OsStr::new("check"),
        std::ffi::OsStr::new("--config"),
        path.as_os_str(),
    ]);
    (code.unwrap_or(-1), text)
}

#[test]
fn valid_files_pass() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/icpgate.toml");
    let (code, out) = check_path(&shipped);
    assert_eq!(code, 0, "{out}");
    let (code, out) =
        check("[listen]\nproxy_protocol = true\n\n[limits]\ndrain_timeout = \"45s\"\n");
    assert_eq!(code, 0, "{out}");
}

#[test]
fn broken_files_name_line_and_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (what, file, key named, line named)
        (
            "a misspelt key",
            "[listen]\nhttp = \"127.0.0.1:1\"\n\n[policy]\nmode = \"enforce\"\nblok_status = 403\n",
            "blok_status",
            ":6",
        ),
        (
            "a bad duration",
            "[limits]\nheader_read_timeout = \"soon\"\n",
            "header_read_timeout",
            ":2",
        ),
        (
            "a value validation refuses",
            "[policy]\nblock_status = 500\n",
            "block_status",
            ":2",
        ),
        (
            "a limit too small",
            "[limits]\n\nmax_header_bytes = 10\n",
            "max_header_bytes",
            ":3",
        ),
    ];
    for (what, text, key, line) in cases {
        let (code, out) = check(text);
        assert_ne!(code, 0, "{what}: {out}");
        assert!(out.contains(key), "{what}: key not named: {out}");
        assert!(out.contains(line), "{what}: line not named: {out}");
    }
    let (code, out) = check_path(std::path::Path::new("/nonexistent/icpgate.toml"));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("/nonexistent/icpgate.toml"), "{out}");
}

#[test]
fn a_bad_admin_tokens_file_is_named_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, "# staff\nalice not-a-sha256\n").expect("write tokens");
    let config = dir.path().join("icpgate.toml");
    let text = format!("[admin]\ntokens_file = \"{}\"\n", tokens.display());
    std::fs::write(&config, text).expect("write config");
    let (code, out) = check_path(&config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}:2:", tokens.display())),
        "file and line: {out}"
    );
    assert!(out.contains("SHA-256"), "what is wrong: {out}");

    std::fs::write(&tokens, format!("alice {}\n", "ab".repeat(32))).expect("fix tokens");
    let (code, out) = check_path(&config);
    assert_eq!(code, 0, "{out}");
}

/// Issue 15: a raw token pasted into `admin.tokens_file` instead of its hash is named
/// by file and line, never printed; a short shared token is refused naming where it
/// came from, not what it is; an admin listener on a non-loopback address without a
/// token is refused.
#[test]
fn admin_secrets_are_never_printed_and_exposure_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = "RawAdminToken-do-not-print-0123456789abcdef";
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, format!("# staff\nalice {raw}\n")).expect("write tokens");
    let config = dir.path().join("icpgate.toml");
    let text = format!("[admin]\ntokens_file = \"{}\"\n", tokens.display());
    std::fs::write(&config, text).expect("write config");
    let (code, out) = check_path(&config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{}:2:", tokens.display())), "{out}");
    assert!(
        !out.contains("RawAdminToken"),
        "the token is printed: {out}"
    );

    let short = dir.path().join("token");
    std::fs::write(&short, "ShortSecret-0123456789\n").expect("write token");
    let text = format!("[admin]\ntoken_file = \"{}\"\n", short.display());
    std::fs::write(&config, text).expect("write config");
    let (code, out) = check_path(&config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&short.display().to_string()), "{out}");
    assert!(out.contains("shorter than 32"), "{out}");
    assert!(!out.contains("ShortSecret"), "the token is printed: {out}");

    let (code, out) = check(
        "[listen]\nadmin = \"0.0.0.0:9090\"\n\n[admin]\ntoken_env = \"ICPGATE_TEST_NEVER_SET_TOKEN\"\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a loopback address"), "{out}");

    let (code, out) = check(
        "[notify]\nurl = \"ftp://hook:NotifyPassw0rd@hooks.example/x\"\nsecret = \"NotifySecret\"\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("notify.url"), "{out}");
    assert!(
        !out.contains("NotifyPassw0rd") && !out.contains("NotifySecret"),
        "{out}"
    );
}
