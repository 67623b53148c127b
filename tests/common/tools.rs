//! What a test needs from outside the repository (a command, a file, a service):
//! without it a test skips locally and fails under CI.

/// Whether this is a CI run (`CI` set, as CI services and `.ci/run` do): there a
/// test whose tool, file or service is missing fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A test cannot run here because `what` is missing. Under CI that is a failure;
/// locally the test prints "skipped …" and the caller returns.
pub fn skip_or_fail(test: &str, what: &str) {
    if in_ci() {
        panic!("{test}: {what}, and under CI nothing may be skipped (.ci/run provides it)");
    }
    println!("skipped {test}: {what} (.ci/run provides it)");
}

/// Whether the command `tool` runs (`tool --version` or `tool version`); when it
/// does not, see [`skip_or_fail`].
pub fn require_tool(tool: &str) -> bool {
    let runs = |arg: &str| {
        std::process::Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let found = runs("--version") || runs("version");
    if !found {
        skip_or_fail(
            std::thread::current().name().unwrap_or("test"),
            &format!("`{tool}` is not installed"),
        );
    }
    found
}

/// Run `command` (an `openssl s_client …`, say) with piped standard streams, send
/// `request` on its input, and return what it wrote to stdout and stderr once it
/// ends (within 15 s).
pub async fn exchange(mut command: tokio::process::Command, request: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the client");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(request.as_bytes()).await;
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("the client finished")
        .expect("the client's output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
