//! Pebble, the ACME test CA (Debian's `pebble` package), on loopback: its API with
//! a certificate of ours (trusted by the gate through `acme.ca_file`), its
//! validation pointed at the gate's listeners, and `pebble-challtestsrv` as the
//! DNS server that answers 127.0.0.1 for every name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpStream;

use super::client::{collect, http1_over};
use super::tools::skip_or_fail;

/// A free loopback port (bound once, then released for the caller to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A loopback port kept for a gate listener: bound (not listening) with
/// SO_REUSEPORT, as the gate binds, so nothing else takes it meanwhile and no
/// connection reaches this socket.
pub struct ReservedPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

pub fn reserve_port() -> ReservedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.set_reuseport(true).expect("reuseport");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    ReservedPort {
        _socket: socket,
        port,
    }
}

/// A running Pebble; both processes are killed when it is dropped.
pub struct Pebble {
    children: Vec<Child>,
    /// The ACME directory URL.
    pub directory: String,
    /// The API's certificate, for `acme.ca_file`.
    pub ca_file: PathBuf,
    management: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `tool` can be started at all (Pebble has no `--version`).
fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Pebble {
    /// Start Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` of 127.0.0.1, issuing certificates valid for `validity` (Pebble's
    /// default, 5 years, when None); None (skipped, or failed under CI) without it.
    pub async fn start(
        test: &str,
        http_port: u16,
        tls_port: u16,
        validity: Option<Duration>,
    ) -> Option<Pebble> {
        if !installed("pebble") || !installed("pebble-challtestsrv") {
            skip_or_fail(test, "`pebble` is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("pebble dir");
        let issued = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("pebble api cert");
        let ca_file = dir.path().join("api.pem");
        let key_file = dir.path().join("api.key");
        std::fs::write(&ca_file, issued.cert.pem()).expect("write cert");
        std::fs::write(&key_file, issued.signing_key.serialize_pem()).expect("write key");
        let (api, management, dns) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": ca_file, "privateKey": key_file,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        let mut config = config;
        if let Some(validity) = validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config_file = dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).expect("write pebble config");
        let log = dir.path().join("pebble.log");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let out = std::fs::File::create(&log).expect("pebble log");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start pebble");
        let started = Pebble {
            children: vec![dns_server, pebble],
            directory: format!("https://127.0.0.1:{api}/dir"),
            ca_file,
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            log,
            _dir: dir,
        };
        let up = super::wait::eventually(Duration::from_secs(20), || async {
            TcpStream::connect(("127.0.0.1", api)).await.is_ok()
        })
        .await;
        assert!(up, "pebble did not start: {}", started.log_text());
        Some(started)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How often Pebble's log names `name` (every order and validation does).
    pub fn mentions(&self, name: &str) -> usize {
        self.log_text().matches(name).count()
    }

    /// The `[acme]` section of a gate using this Pebble.
    pub fn acme_section(&self) -> String {
        format!(
            "[acme]\ndirectory = \"{}\"\nca_file = \"{}\"\nemail = \"ops@example.cn\"\n",
            self.directory,
            self.ca_file.display()
        )
    }

    /// Pebble's root (a new one every start), from its management API.
    pub async fn root_pem(&self) -> String {
        self.api().management_get("/roots/0").await
    }

    /// Pebble's endpoints, for requests a test makes itself.
    pub fn api(&self) -> PebbleApi {
        PebbleApi {
            directory: self.directory.clone(),
            ca_file: self.ca_file.clone(),
            management: self.management,
        }
    }
}

/// Pebble's API (its directory) and management API, both behind its API certificate.
#[derive(Clone)]
pub struct PebbleApi {
    pub directory: String,
    /// The API's certificate; its key lies beside it, in `api.key`.
    pub ca_file: PathBuf,
    management: SocketAddr,
}

impl PebbleApi {
    /// GET `path` from the ACME API; returns the body.
    pub async fn api_get(&self, path: &str) -> String {
        let authority = self.directory.trim_start_matches("https://");
        let authority = authority.split('/').next().unwrap_or_default();
        self.get(authority.parse().expect("API address"), path)
            .await
    }

    /// GET `path` from the management API; returns the body.
    pub async fn management_get(&self, path: &str) -> String {
        self.get(self.management, path).await
    }

    async fn get(&self, addr: SocketAddr, path: &str) -> String {
        let mut config = icpgate::edge::acme::trust::acme_client_config(Some(&self.ca_file))
            .expect("client config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.expect("pebble");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("pebble TLS");
        let mut sender = http1_over(tls).await;
        let request = http::Request::builder()
            .uri(path)
            // Pebble's directory names its URLs after the host asked for.
            .header("host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let reply = collect(sender.send_request(request).await.expect(path)).await;
        String::from_utf8_lossy(&reply.body).into_owned()
    }
}
