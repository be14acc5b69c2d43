//! Who may use the proxy: the client key (constant-time compare), the `Host` check against
//! DNS rebinding, and the `Origin` check against web pages on other sites.

use http::{HeaderMap, header};

/// Whether `headers` present `key` as `Authorization: Bearer KEY`, `api-key` or `x-api-key`.
pub(crate) fn presents_key(headers: &HeaderMap, key: &[u8]) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| {
            let v = v.as_bytes();
            let scheme = v.get(..7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| v.get(7..))
                .flatten()
        });
    let plain = ["api-key", "x-api-key"]
        .into_iter()
        .flat_map(|name| headers.get_all(name).iter().map(|v| v.as_bytes()));
    // Every candidate is compared, whatever an earlier one gave.
    bearer
        .chain(plain)
        .fold(false, |found, given| constant_time_eq(given, key) | found)
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Host` header names this loopback proxy: `127.0.0.1`, `localhost` or `[::1]`,
/// with `port` (or no port).
pub(crate) fn loopback_host(host: Option<&str>, port: u16) -> bool {
    let Some(host) = host else {
        return false;
    };
    let (name, given_port) = split_port(host);
    let port_ok = given_port.is_none_or(|p| p.parse::<u16>() == Ok(port));
    port_ok && loopback_name(name)
}

/// Whether a browser sent the request from a page on another site. Such a page reaches a
/// loopback address with a loopback `Host` (so the `Host` check passes), and a websocket
/// handshake has no CORS to stop it reading the answers. Refused:
/// - an `Origin` of `null` (a sandboxed frame, a page from a file) or an `http`/`https`
///   origin whose host is not `127.0.0.1`, `localhost` or `[::1]`;
/// - without `Origin`, `Sec-Fetch-Site: cross-site` (an image, a script or a link on
///   another site's page).
///
/// Not refused: no `Origin` at all (SDKs, curl, every non-browser client), a loopback
/// page on any port, and an application's own scheme (`vscode-webview://`,
/// `chrome-extension://`), which no web page can send.
pub(crate) fn from_another_site(headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN) {
        Some(origin) => !origin.to_str().is_ok_and(local_origin),
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site")),
    }
}

/// `scheme://host[:port]`: `http`/`https` on a loopback host, or any other scheme.
fn local_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        // `null`, or not an origin at all.
        return false;
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return true;
    }
    loopback_name(split_port(authority).0)
}

/// `name[:port]` split at the port, if there is one (`[::1]:8585`, `[::1]`, `localhost`).
fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, p)) if !name.ends_with(':') && !p.contains(']') => (name, Some(p)),
        _ => (host, None),
    }
}

/// `localhost`, `[::1]` or an IPv4 loopback literal (`127.0.0.1`, and any of 127.0.0.0/8,
/// so `--listen 127.0.0.2:P` serves its own URL). A literal cannot be a rebound name.
fn loopback_name(name: &str) -> bool {
    ["localhost", "[::1]"]
        .iter()
        .any(|l| name.eq_ignore_ascii_case(l))
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        // Found in trial: `--listen 127.0.0.2:P` refused its own printed URL.
        assert!(loopback_host(Some("127.0.0.2:8585"), 8585));
        assert!(!loopback_host(Some("127.evil.example:8585"), 8585));
        assert!(!loopback_host(Some("128.0.0.1:8585"), 8585));
        for ok in [
            "127.0.0.1:8585",
            "localhost:8585",
            "[::1]:8585",
            "LOCALHOST",
            "127.0.0.1",
        ] {
            assert!(loopback_host(Some(ok), 8585), "{ok}");
        }
        for bad in [
            "evil.example:8585",
            "127.0.0.1:80",
            "127.0.0.1.evil.example:8585",
            "[::1]:1",
            "",
        ] {
            assert!(!loopback_host(Some(bad), 8585), "{bad}");
        }
        assert!(!loopback_host(None, 8585));
    }

    #[test]
    fn origins() {
        let with = |name: &str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            h
        };
        for local in [
            "http://localhost:3000",
            "http://127.0.0.1:8585",
            "https://LOCALHOST",
            "http://[::1]:5173",
            "vscode-webview://1a2b3c",
            "chrome-extension://abcdef",
        ] {
            assert!(!from_another_site(&with("origin", local)), "{local}");
        }
        for foreign in [
            "https://evil.example",
            "http://127.0.0.1.evil.example:8585",
            "http://localhost.evil.example",
            "null",
            "",
            "localhost",
        ] {
            assert!(from_another_site(&with("origin", foreign)), "{foreign}");
        }
        assert!(from_another_site(&with("sec-fetch-site", "cross-site")));
        assert!(!from_another_site(&with("sec-fetch-site", "none")));
        assert!(!from_another_site(&with("sec-fetch-site", "same-origin")));
        assert!(!from_another_site(&HeaderMap::new()));
        // An Origin decides, whatever Sec-Fetch-Site says.
        let mut local = with("origin", "http://localhost:3000");
        local.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!from_another_site(&local));
    }

    #[test]
    fn keys() {
        let mut h = HeaderMap::new();
        assert!(!presents_key(&h, b"k3y"));
        h.insert("authorization", "Bearer k3y".parse().unwrap());
        assert!(presents_key(&h, b"k3y"));
        assert!(!presents_key(&h, b"k3z"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k3y".parse().unwrap());
        assert!(presents_key(&h, b"k3y"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b"ab"));
    }
}
