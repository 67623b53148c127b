//! What operators watch: metric handles and process metrics, and the most-blocked
//! hosts of live traffic. Depends on the model only, so every layer above may count.

pub mod blocked_hosts;
pub mod metrics;
