//! The contract these tests pin: bodies stream through the gate in both directions
//! (a chunk reaches the other side before the sender has finished — nothing is
//! buffered whole), and protocol upgrades (WebSocket) pass for allowed hosts only.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};

type Chunks = StreamBody<tokio_stream_shim::Receiver>;

/// A tiny Stream over an mpsc receiver (avoids a tokio-stream dependency).
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::Frame;

    pub struct Receiver(pub tokio::sync::mpsc::Receiver<Bytes>);

    impl futures_util::Stream for Receiver {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
        }
    }
}

/// The origin's side of the streaming tests.
struct StreamingOrigin {
    /// Chunks the origin sends as the `/download` response body.
    download: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// Chunks the origin received on `/upload`, as they arrive.
    uploaded: mpsc::Sender<Bytes>,
}

async fn streaming_origin(origin: Arc<StreamingOrigin>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let origin = Arc::clone(&origin);
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(Arc::clone(&origin), request));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn handle(
    origin: Arc<StreamingOrigin>,
    mut request: Request<Incoming>,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    let empty = || http_body_util::Empty::<Bytes>::new().boxed();
    match request.uri().path() {
        "/download" => {
            let receiver = origin.download.lock().await.take().expect("one download");
            Ok(Response::new(
                StreamBody::new(tokio_stream_shim::Receiver(receiver)).boxed(),
            ))
        }
        "/upload" => {
            let mut body = request.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let _ = origin.uploaded.send(data).await;
                }
            }
            Ok(Response::new(empty()))
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 64];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert("connection", "upgrade".parse().expect("static"));
            response
                .headers_mut()
                .insert("upgrade", "websocket".parse().expect("static"));
            Ok(response)
        }
        _ => Ok(Response::new(empty())),
    }
}

async fn setup() -> (TestGate, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    setup_with("").await
}

async fn setup_with(extra: &str) -> (TestGate, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    let (download_tx, download_rx) = mpsc::channel(4);
    let (uploaded_tx, uploaded_rx) = mpsc::channel(4);
    let origin = Arc::new(StreamingOrigin {
        download: Mutex::new(Some(download_rx)),
        uploaded: uploaded_tx,
    });
    let addr = streaming_origin(origin).await;
    let gate = TestGate::start(&standard_seed(), Some(addr), None, extra).await;
    (gate, download_tx, uploaded_rx)
}

async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Chunks> {
    http1_connect(addr).await
}

const STEP: Duration = Duration::from_secs(5);

#[tokio::test]
async fn response_bodies_stream_to_the_client() {
    let (gate, download, _) = setup().await;
    let mut sender = client(gate.http).await;
    // A GET has no body: a channel whose sender is already gone.
    let no_body = mpsc::channel(1).1;
    let request = Request::get("/download")
        .header("host", "example.com")
        .body(StreamBody::new(tokio_stream_shim::Receiver(no_body)))
        .expect("request");
    download
        .send(Bytes::from_static(b"first"))
        .await
        .expect("send first");
    let response = tokio::time::timeout(STEP, sender.send_request(request))
        .await
        .expect("head in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("first chunk before the origin finished");
    assert_eq!(
        first.and_then(|f| f.ok()).and_then(|f| f.into_data().ok()),
        Some(Bytes::from_static(b"first"))
    );
    download
        .send(Bytes::from_static(b"second"))
        .await
        .expect("send second");
    drop(download);
    let rest = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    assert_eq!(rest, Bytes::from_static(b"second"));
}

#[tokio::test]
async fn request_bodies_stream_to_the_origin() {
    let (gate, _, mut uploaded) = setup().await;
    let mut sender = client(gate.http).await;
    let (chunks, receiver) = mpsc::channel(4);
    let request = Request::post("/upload")
        .header("host", "example.com")
        .header("transfer-encoding", "chunked")
        .body(StreamBody::new(tokio_stream_shim::Receiver(receiver)))
        .expect("request");
    let response =
        tokio::spawn(async move { sender.send_request(request).await.map(|r| r.status()) });
    chunks
        .send(Bytes::from_static(b"part-1"))
        .await
        .expect("send");
    let first = tokio::time::timeout(STEP, uploaded.recv())
        .await
        .expect("origin saw part 1 before the client finished");
    assert_eq!(first, Some(Bytes::from_static(b"part-1")));
    chunks
        .send(Bytes::from_static(b"part-2"))
        .await
        .expect("send");
    drop(chunks);
    assert_eq!(uploaded.recv().await, Some(Bytes::from_static(b"part-2")));
    let status = response.await.expect("join").expect("response");
    assert_eq!(status, 200);
}

async fn upgrade(gate: &TestGate, host: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(gate.http).await.expect("connect");
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(STEP, stream.read(&mut byte)).await {
            Ok(Ok(1)) => response.push(byte[0]),
            _ => break,
        }
    }
    (String::from_utf8_lossy(&response).into_owned(), stream)
}

#[tokio::test]
async fn websocket_upgrades_pass_for_allowed_hosts_only() {
    let (gate, _, _) = setup().await;
    let (head, mut stream) = upgrade(&gate, "example.com").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    tokio::time::timeout(STEP, stream.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&echo, b"ping");

    let (head, _) = upgrade(&gate, "unfiled.com").await;
    assert!(head.starts_with("HTTP/1.1 451"), "{head}");
}

/// A WebSocket is quiet for minutes at a time: once upgraded, the connection is no
/// longer an HTTP/1 keep-alive, so neither the head nor the idle timeout applies.
#[tokio::test]
async fn an_upgraded_connection_is_not_closed_as_an_idle_keep_alive() {
    let (gate, _, _) =
        setup_with("[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"1s\"\n").await;
    let (head, mut stream) = upgrade(&gate, "example.com").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream.write_all(b"late").await.expect("write");
    let mut echo = [0u8; 4];
    tokio::time::timeout(STEP, stream.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("the quiet tunnel is still open");
    assert_eq!(&echo, b"late");
}

/// A client that stops reading its response is cut after `idle_timeout` (nginx's
/// `send_timeout`): it cannot hold its connection and the upstream response open
/// for ever. The origin sees its body dropped.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_idle_timeout() {
    let (gate, download, _) = setup_with("[limits]\nidle_timeout = \"1s\"\n").await;
    let mut stream = TcpStream::connect(gate.http).await.expect("connect");
    stream
        .write_all(b"GET /download HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await
        .expect("write");
    // Never read: push until the gate gives the response up (the channel closes).
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let cut = tokio::time::timeout(Duration::from_secs(20), async {
        let mut pushed = 0usize;
        while download.send(chunk.clone()).await.is_ok() {
            pushed += chunk.len();
        }
        pushed
    })
    .await;
    let pushed = cut.expect("the stalled client's response was never given up");
    assert!(pushed > 0, "the response was streaming before the stall");
    drop(stream);
}
