//! The contract this test pins: when the SQLite registry's disk fills up, a write
//! that needs space is refused with a 503 whose detail names the problem ("database
//! or disk is full"), never acknowledged; every write acknowledged before or
//! during the fault stays, in the live registry and in its files; the gate keeps
//! deciding requests meanwhile; and once space is back, writes work again without a
//! restart.
//!
//! The disk is real and really full: the real `icpgate` binary runs in a mount
//! namespace of its own (`unshare -m`, or `unshare -rm` through a user namespace
//! when not root) with its registry on a small tmpfs, which the test fills through
//! `/proc/<pid>/root` until the kernel answers ENOSPC, then empties again. Without
//! the right to mount there, the test skips locally and fails under CI.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use icpgate::registry::sqlite::SqliteRegistry;
use icpgate::registry::Registry;
use serde_json::Value;

/// Mounts a tmpfs of 4 MiB on its first argument, then runs the rest.
const MOUNT_THEN_RUN: &str =
    "mount -t tmpfs -o size=4m,mode=0700 icpgate-test \"$1\" && shift && exec \"$@\"";

/// The `unshare` flags that give this process a private mount namespace where it
/// may mount a tmpfs: `-m` as root, `-rm` through a user namespace otherwise.
fn private_mount_flags(probe_dir: &Path) -> Option<&'static str> {
    ["-m", "-rm"].into_iter().find(|flags| {
        Command::new("unshare")
            .args([flags, "sh", "-c", MOUNT_THEN_RUN, "sh"])
            .arg(probe_dir)
            .arg("true")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// The gate as a child process; killed when dropped.
struct Child(Served);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

impl Child {
    /// `path` as the gate's mount namespace sees it.
    fn inside(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").expect("an absolute path");
        Path::new("/proc")
            .join(self.0.child.id().to_string())
            .join("root")
            .join(relative)
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let reply =
            admin_request(self.0.admin, method, path, Some(TOKEN), &[], body.as_ref()).await;
        (reply.status.as_u16(), reply.json())
    }

    async fn submit(&self, domain: &str) -> (u16, Value) {
        let body = submission(&[domain], "new", None);
        self.api("POST", "/v1/filings", Some(body)).await
    }

    async fn reason(&self, host: &str) -> (u16, Option<String>) {
        let reply = http1(self.0.http, "GET", "/", &[("host", host)], b"").await;
        (reply.status.as_u16(), reply.reason().map(str::to_string))
    }
}

/// Fill the filesystem holding `path` with a file there until the kernel says it is
/// full; ENOSPC is asserted, so the disk is really full.
fn fill(path: &Path) {
    let mut filler = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    let error = loop {
        if let Err(error) = filler.write_all(&chunk) {
            break error;
        }
    };
    assert_eq!(
        error.raw_os_error(),
        Some(28),
        "the filler stopped for another reason than a full disk: {error}"
    );
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing_acknowledged() {
    let test = "a_full_disk_refuses_writes_clearly_and_loses_nothing_acknowledged";
    let probe = tempfile::tempdir().expect("tempdir");
    let Some(flags) = private_mount_flags(probe.path()) else {
        skip_or_fail(
            test,
            "cannot mount a tmpfs in a private mount namespace (unshare -m / -rm)",
        );
        return;
    };
    let origin = start_origin("storefront").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mount point");
    let db = data.join("registry.db");
    let text = config_text(dir.path(), &standard_seed(), &[origin], &[], "", "").replace(
        &format!("path = \"{}\"", dir.path().join("registry.db").display()),
        &format!("path = \"{}\"", db.display()),
    );
    assert!(
        text.contains(&db.display().to_string()),
        "the registry is on the tmpfs"
    );
    let config = dir.path().join("icpgate.toml");
    std::fs::write(&config, text).expect("write config");
    let mount = data.to_str().expect("utf-8 path");
    let gate = Child(serve_wrapped(
        &["unshare", flags, "sh", "-c", MOUNT_THEN_RUN, "sh", mount],
        &config,
    ));

    assert_eq!(gate.reason("example.com").await, (200, None));
    let (status, before) = gate.submit("before-full.cn").await;
    assert_eq!(status, 201, "{before}");
    let mut acknowledged = vec!["before-full.cn".to_string()];

    fill(&gate.inside(&data.join("filler")));
    // A write that needs space is refused and says why; one that fits in space
    // SQLite already holds may still be acknowledged, and must then be kept.
    let mut refusal = None;
    for n in 0..50 {
        let domain = format!("during-full-{n}.cn");
        match gate.submit(&domain).await {
            (201, _) => acknowledged.push(domain),
            (status, body) => {
                refusal = Some((domain, status, body));
                break;
            }
        }
    }
    let (refused, status, body) = refusal.expect("no write was refused on a full disk");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "registry_unavailable", "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    let during = acknowledged.len() - 1;
    println!("refused {refused} after {during} acknowledged on the full disk: {detail}");
    assert!(
        detail.contains("disk is full"),
        "the answer names the problem: {detail}"
    );

    // The gate keeps deciding: filed hosts pass, unfiled ones are blocked, and the
    // registry still reads.
    assert_eq!(gate.reason("example.com").await, (200, None));
    assert_eq!(
        gate.reason("www.unfiled-while-full.cn").await.1.as_deref(),
        Some("not_filed")
    );
    let id = before["id"].as_i64().expect("id");
    assert_eq!(
        gate.api("GET", &format!("/v1/filings/{id}"), None).await.0,
        200
    );

    // Space is back: writes work again, on the same process.
    std::fs::remove_file(gate.inside(&data.join("filler"))).expect("free the space");
    let (status, after) = gate.submit("after-full.cn").await;
    assert_eq!(status, 201, "a write after the space is back: {after}");
    acknowledged.push("after-full.cn".to_string());
    let review = serde_json::json!({"approve": true});
    let (status, reviewed) = gate
        .api(
            "POST",
            &format!("/v1/filings/{id}/initial-review"),
            Some(review),
        )
        .await;
    assert_eq!(status, 200, "{reviewed}");

    // Nothing acknowledged is lost, nothing refused was kept: through the API ...
    let count = |listing: &Value| {
        listing["filings"]
            .as_array()
            .or(listing.as_array())
            .map_or(0, Vec::len)
    };
    for domain in &acknowledged {
        let (_, listing) = gate
            .api("GET", &format!("/v1/filings?domain={domain}"), None)
            .await;
        assert_eq!(count(&listing), 1, "{domain} was acknowledged: {listing}");
    }
    let (_, listing) = gate
        .api("GET", &format!("/v1/filings?domain={refused}"), None)
        .await;
    assert_eq!(count(&listing), 0, "{refused} was refused: {listing}");

    // ... and in the files, as the next start would read them.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).expect("copy dir");
    for suffix in ["", "-wal"] {
        let name = format!("registry.db{suffix}");
        std::fs::copy(gate.inside(&data.join(&name)), copy.join(&name)).expect("copy out");
    }
    drop(gate);
    let files = SqliteRegistry::open(&copy.join("registry.db")).expect("open the copy");
    let filing = files
        .get(id)
        .await
        .expect("read")
        .expect("the first filing");
    assert_eq!(filing.status.as_str(), "authority_review");
    let stored: Vec<String> = files
        .list(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .flat_map(|f| f.domains)
        .collect();
    for domain in &acknowledged {
        assert!(
            stored.contains(domain),
            "{domain} is in the files: {stored:?}"
        );
    }
    assert!(!stored.contains(&refused), "{refused} is not in the files");
}
