//! Which headers cross the proxy, each way: the client's credential and hop-by-hop headers
//! never go upstream; hop-by-hop headers of an answer never come back; every header value
//! that holds a token is scrubbed.

use http::{HeaderMap, HeaderName, header};

/// Inbound headers that carry the client's own (dummy) credential: never forwarded.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus those the upstream client sets itself, and
/// `Expect`: the proxy answered the client's `100-continue` itself, and sends the body
/// upstream without waiting.
const NOT_FORWARDED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    // Bodies come back uncompressed, so error answers can be scrubbed.
    "accept-encoding",
];

/// The inbound headers that may go upstream: no credential, no hop-by-hop header (nor one
/// the `Connection` header names).
pub(crate) fn forwardable(inbound: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<&str> = inbound
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in inbound {
        let n = name.as_str();
        if CREDENTIAL_HEADERS.contains(&n)
            || NOT_FORWARDED.contains(&n)
            || named_by_connection
                .iter()
                .any(|c| c.eq_ignore_ascii_case(n))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Replaces every header value that holds a secret with its scrubbed form (or with
/// `[REDACTED]` alone, should that form not be a valid header value). A value without one
/// costs a scan.
pub(crate) fn scrub_headers(scrubber: &provider_auth::Scrubber, headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        if !scrubber.finds_secret(value.as_bytes()) {
            continue;
        }
        let text = String::from_utf8_lossy(value.as_bytes());
        let scrubbed = scrubber.scrub(&text);
        if scrubbed != text {
            *value = http::HeaderValue::from_str(&scrubbed)
                .unwrap_or_else(|_| http::HeaderValue::from_static(provider_auth::REDACTED));
        }
    }
}

/// Removes the hop-by-hop headers of a gateway answer; its `Content-Length` stays.
pub(crate) fn drop_not_forwarded(headers: &mut HeaderMap) {
    // Hop-by-hop: the fixed list, and whatever the gateway names in its own `Connection`
    // (compared without allocating: most answers name only `keep-alive` or `close`).
    let connection: Vec<&[u8]> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|n| !n.is_empty())
        .collect();
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            *name != header::CONTENT_LENGTH
                && (NOT_FORWARDED.contains(&name.as_str())
                    || connection
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(name.as_str().as_bytes())))
        })
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
}
