//! The one body type the proxy hands to hyper in both directions: streamed request
//! and response bodies from the other side, or a small synthetic page.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body of any origin.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Box any body whose errors can be boxed.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A complete, in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    boxed(Full::new(bytes.into()))
}
