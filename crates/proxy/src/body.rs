//! The one body type of the proxy, both ways and on both sides (hyper's server and its
//! pooled client), and the few ways to make one. A leaf: it imports nothing of the crate.

use bytes::Bytes;
use futures::{Stream, TryStreamExt as _};
use http::{StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::Frame;

/// Any error a body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed body of bytes: a client's request body, a gateway's answer (bounded, scrubbed,
/// watched), or one the proxy makes itself.
pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A request with the proxy's body.
pub(crate) type Request = http::Request<Body>;

/// An answer with the proxy's body.
pub(crate) type Response = http::Response<Body>;

/// Any body of bytes, boxed.
pub(crate) fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// No body.
pub(crate) fn empty() -> Body {
    boxed(Empty::new().map_err(|never| match never {}))
}

/// A body of these bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    boxed(Full::new(bytes.into()).map_err(|never| match never {}))
}

/// A body read from a stream of parts.
pub(crate) fn from_stream<S, E>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    boxed(StreamBody::new(
        stream.map_ok(Frame::data).map_err(Into::into),
    ))
}

/// An answer of this status with a JSON body.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
