//! The real `icpgate` binary as a child process: `serve` with its log captured
//! (for real signals), and one-shot CLI runs.

use std::net::SocketAddr;
use std::time::Duration;

use super::gate::{config_text, TOKEN, TOKEN_ENV};
use super::wait::wait_until;

/// The real `icpgate serve` binary as a child process, for tests with real signals.
pub struct GateProcess {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: std::path::PathBuf,
    /// Every log line the process has written so far (stderr).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GateProcess {
    /// Spawn `icpgate serve` on a config written by `config_text`, and wait until both
    /// listeners are bound.
    pub fn spawn(seed: &[String], storefront: SocketAddr, extra: &str) -> GateProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = config_text(dir.path(), seed, &[storefront], &[], "", extra);
        let config_path = dir.path().join("icpgate.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let Served {
            child,
            http,
            admin,
            log,
        } = serve(&config_path);
        GateProcess {
            child,
            http,
            admin,
            dir,
            config_path,
            log,
        }
    }

    /// Send `signal` (e.g. "HUP", "TERM") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Whether some log line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Wait up to `within` for the process to exit; its exit code (None: still running).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        wait_until(within, || {
            std::future::ready(child.try_wait().ok().flatten())
        })
        .await
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `icpgate serve` whose listeners are bound.
pub struct Served {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Every log line the process has written so far (stderr).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Spawn `icpgate serve --config config_path` with `RUST_LOG=info` (listeners on
/// port 0 are fine: the addresses are read from the log, so no port is picked,
/// released and raced for).
pub fn serve(config_path: &std::path::Path) -> Served {
    serve_with_log(config_path, Some("info"))
}

/// [`serve`] with `RUST_LOG` set to `rust_log`, or unset (None: the config's
/// `[log] level` applies). The child gets [`TOKEN`] in [`TOKEN_ENV`].
pub fn serve_with_log(config_path: &std::path::Path, rust_log: Option<&str>) -> Served {
    let command = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"));
    serve_as(command, config_path, rust_log)
}

/// [`serve`] run by `wrapper`, a command that ends by running the words appended to
/// it (e.g. `unshare -m sh -c '…; exec "$@"' sh`), so the gate's process is the
/// wrapper's: its id is the child's.
pub fn serve_wrapped(wrapper: &[&str], config_path: &std::path::Path) -> Served {
    let (program, args) = wrapper.split_first().expect("a wrapper command");
    let mut command = std::process::Command::new(program);
    command.args(args).arg(env!("CARGO_BIN_EXE_icpgate"));
    serve_as(command, config_path, Some("info"))
}

/// `command serve --config config_path`, as [`serve_with_log`] describes.
fn serve_as(
    mut command: std::process::Command,
    config_path: &std::path::Path,
    rust_log: Option<&str>,
) -> Served {
    use std::io::BufRead;
    command
        .args(["serve", "--config"])
        .arg(config_path)
        .env(TOKEN_ENV, TOKEN)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    let mut child = command.spawn().expect("spawn icpgate");
    let stderr = child.stderr.take().expect("stderr piped");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            for (marker, kind) in [("listening (http)", "http"), ("listening (admin)", "admin")] {
                if let Some(addr) = line.contains(marker).then(|| logged_addr(&line)).flatten() {
                    let _ = tx.send((kind, addr));
                }
            }
            sink.lock().expect("log lock").push(line);
        }
    });
    let (mut http, mut admin) = (None, None);
    while http.is_none() || admin.is_none() {
        let Ok((kind, addr)) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gate did not start: {:?}", log.lock());
        };
        *(if kind == "http" {
            &mut http
        } else {
            &mut admin
        }) = Some(addr);
    }
    Served {
        child,
        http: http.expect("http"),
        admin: admin.expect("admin"),
        log,
    }
}

/// The address in a log line like `listening (http) addr=Some(127.0.0.1:4242)`.
fn logged_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find("Some(")? + "Some(".len();
    let end = start + line[start..].find(')')?;
    line[start..end].parse().ok()
}

/// Run the real `icpgate` binary with `args`; its exit code (None when killed by a
/// signal) and everything it printed, stdout then stderr.
pub fn run_icpgate<I, S>(args: I) -> (Option<i32>, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .args(args)
        .output()
        .expect("run icpgate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}
