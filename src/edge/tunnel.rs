//! Protocol switches (WebSocket): once the upstream answers 101, bytes flow both ways
//! between the client's and the upstream's upgraded connections until either closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Join the two upgraded connections; errors end the tunnel and are logged.
pub async fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "protocol switch did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "tunnel closed with an error");
    }
}
