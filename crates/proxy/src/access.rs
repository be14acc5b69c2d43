//! Who may use the proxy: the client key (constant-time compare) and the `Host` check
//! against DNS rebinding.

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
    let (name, given_port) = match host.rsplit_once(':') {
        Some((name, p)) if !name.ends_with(':') && !p.contains(']') => (name, Some(p)),
        _ => (host, None),
    };
    let port_ok = given_port.is_none_or(|p| p.parse::<u16>() == Ok(port));
    let name_ok = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|l| name.eq_ignore_ascii_case(l));
    port_ok && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
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
