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
