//! The one place request headers are built, for the HTTP and websocket clients alike.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use provider_config::ModelProviderInfo;

/// The `User-Agent` of every request and handshake.
pub const USER_AGENT: &str = concat!("modelauth/", env!("CARGO_PKG_VERSION"));

/// The headers of every request to `info`'s gateway, before the credential: `User-Agent`,
/// then `http_headers` and `env_http_headers` (variables read now), every configured value
/// marked sensitive (they often carry keys). A name or value that cannot be sent is an
/// error naming the header, never its value.
///
/// These go only to the configured host: the clients never follow a redirect elsewhere.
pub(crate) fn provider_headers(info: &ModelProviderInfo) -> Result<HeaderMap, InvalidHeader> {
    let mut headers = HeaderMap::new();
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    for (name, value) in info.extra_headers(|var| std::env::var(var).ok()) {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| InvalidHeader::Name { name: name.clone() })?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| InvalidHeader::Value {
            name: name.to_string(),
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// A configured header (`http_headers`, `env_http_headers`) that cannot be sent. Names the
/// header, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHeader {
    /// The name is not a valid header name.
    #[error("`{name}` is not a valid header name")]
    Name {
        /// The name as configured.
        name: String,
    },
    /// The value (as configured, or read from its variable) is not a valid header value.
    #[error("the value of header `{name}` is not a valid header value")]
    Value {
        /// The header's name.
        name: String,
    },
}

/// Configured header values at least this long are treated as secrets.
const MIN_SECRET_HEADER_VALUE: usize = 8;

/// The values of the configured headers (`http_headers`, `env_http_headers`) long enough to
/// be keys, for scrubbing gateway text that echoes them.
pub(crate) fn configured_header_values(info: &ModelProviderInfo) -> Vec<String> {
    info.extra_headers(|var| std::env::var(var).ok())
        .into_iter()
        .map(|(_, value)| value)
        .filter(|value| value.len() >= MIN_SECRET_HEADER_VALUE)
        .collect()
}
