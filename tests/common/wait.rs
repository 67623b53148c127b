//! Waiting for something to happen: the one polling loop the tests use.

use std::future::Future;
use std::time::Duration;

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(50);

/// Poll `check` every 50 ms until it returns `Some`, for up to `within` (it runs at
/// least once, and once more at the deadline); that value, or None when time ran out.
/// A synchronous check is `|| std::future::ready(...)`.
pub async fn wait_until<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `check` became true within `within` (polled as by [`wait_until`]).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until(within, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
    .is_some()
}
