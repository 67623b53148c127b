//! What operators watch: metric handles and process metrics, the most-blocked
//! hosts of live traffic and the block rate by reason over the last hour. Depends on the model only, so every layer above may count.

pub mod block_rate;
pub mod blocked_hosts;
pub mod metrics;
