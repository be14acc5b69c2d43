//! Reaching a gateway through an HTTP proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`), the same settings the HTTP client (reqwest) honours, with a `CONNECT`
//! tunnel: one [`connect_tcp`] for the websocket client (`realtime`) and for every upstream
//! connection of the `proxy` crate, so both go the same way.
//!
//! A refusal says which proxy and what it answered (`proxy HOST:PORT refused the tunnel
//! (HTTP 407)`), never the proxy's credentials.
//!
//! And the one TLS client configuration ([`tls_config`]): rustls with the platform's trust
//! store, built once per process, for the websocket client and the proxy alike.

use base64::Engine as _;
use std::net::IpAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use url::Url;

use std::sync::{Arc, OnceLock};

/// Why there is no TLS client configuration: the platform's trust store cannot be loaded.
/// A leaf: it says what rustls said, so that the string a connection error carries is whole.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load the platform's TLS trust store: {cause}")]
pub struct TlsError {
    cause: rustls::Error,
}

/// The TLS client configuration of every gateway connection made here: rustls (aws-lc-rs,
/// TLS 1.2 and 1.3) verifying with the platform's trust store (`rustls-platform-verifier`,
/// which honours `SSL_CERT_FILE` on Linux), as reqwest has it in the HTTP clients. Built
/// once per process. It sets no ALPN: a user that needs one (`http/1.1`) adds it to a copy.
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, TlsError>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|cause| TlsError { cause })?;
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|cause| TlsError { cause })?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// Largest proxy answer to a `CONNECT` read before giving up.
const MAX_CONNECT_ANSWER: usize = 8 * 1024;

/// A TCP connection to `host:port` (a name, an IPv4 address or a bracketed IPv6 one) for a
/// `secure` (https, wss) or plain (http, ws) target: through the HTTP proxy the environment
/// names for it, with a `CONNECT` tunnel, else directly. An error names the proxy's host and
/// port, never its credentials.
pub async fn connect_tcp(secure: bool, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let host = host.trim_matches(['[', ']']);
    match proxy_for(secure, host, |var| std::env::var(var).ok()) {
        Some(proxy) => tunnel(&proxy, host, port)
            .await
            .map_err(|e| std::io::Error::other(e.0)),
        None => TcpStream::connect((host, port)).await,
    }
}

/// The proxy for `host` from `env`, if any: `HTTPS_PROXY` for a secure target, `HTTP_PROXY`
/// for a plain one (upper or lower case), else `ALL_PROXY`; `NO_PROXY` exempts hosts (`*`,
/// exact names or IPs, domain suffixes such as `.corp` or `corp`, and address ranges such
/// as `10.0.0.0/8` or `fd00::/8`).
fn proxy_for(secure: bool, host: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let var = |name: &str| {
        env(name)
            .or_else(|| env(&name.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    let proxy = if secure {
        var("HTTPS_PROXY")
    } else {
        var("HTTP_PROXY")
    }
    .or_else(|| var("ALL_PROXY"))?;
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    let address = host.parse::<IpAddr>().ok();
    let exempt = var("NO_PROXY").is_some_and(|list| {
        list.split(',').map(str::trim).any(|entry| {
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            let entry = entry.trim_matches(['[', ']']).to_ascii_lowercase();
            entry == "*"
                || address.is_some_and(|a| in_range(a, &entry))
                || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
        })
    });
    (!exempt).then_some(proxy)
}

/// Whether `address` is in `range`, written `ADDRESS/BITS` (`10.0.0.0/8`, `fd00::/8`).
fn in_range(address: IpAddr, range: &str) -> bool {
    let Some((network, bits)) = range.split_once('/') else {
        return false;
    };
    let network = network.trim_matches(['[', ']']).parse::<IpAddr>();
    let (Ok(network), Ok(bits)) = (network, bits.parse::<u32>()) else {
        return false;
    };
    let (address, network, width) = match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(a.to_bits()), u128::from(n.to_bits()), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (a.to_bits(), n.to_bits(), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    // The top `bits` bits of the address's width must agree.
    let mask = u128::MAX.checked_shl(width - bits).unwrap_or(0) & (u128::MAX >> (128 - width));
    address & mask == network & mask
}

/// Why a tunnel could not be opened. Never holds proxy credentials.
struct TunnelError(String);

/// The proxy setting as a URL: `http://HOST:PORT`, or `HOST:PORT` alone (taken as http, as
/// curl does). Any other scheme is refused by name.
fn proxy_url(setting: &str) -> Result<Url, TunnelError> {
    let setting = setting.trim();
    let url = if setting.contains("://") {
        Url::parse(setting)
    } else {
        Url::parse(&format!("http://{setting}"))
    }
    .map_err(|_| TunnelError("the proxy setting is not a URL".to_owned()))?;
    if url.scheme() != "http" {
        return Err(TunnelError(format!(
            "proxy scheme `{}` is not supported (use an http:// proxy)",
            url.scheme()
        )));
    }
    Ok(url)
}

/// Opens a TCP connection to `target_host:target_port` through the HTTP proxy at `proxy`.
async fn tunnel(
    proxy: &str,
    target_host: &str,
    target_port: u16,
) -> Result<TcpStream, TunnelError> {
    let url = proxy_url(proxy)?;
    let proxy_host = url
        .host_str()
        .ok_or_else(|| TunnelError("the proxy URL has no host".to_owned()))?;
    let proxy_port = url.port_or_known_default().unwrap_or(80);
    let shown = format!("proxy {proxy_host}:{proxy_port}");
    let mut stream = TcpStream::connect((proxy_host.trim_matches(['[', ']']), proxy_port))
        .await
        .map_err(|e| TunnelError(format!("cannot reach {shown}: {e}")))?;
    let authority = if target_host.contains(':') {
        format!("[{target_host}]:{target_port}")
    } else {
        format!("{target_host}:{target_port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if !url.username().is_empty() {
        let user = percent_decode(url.username());
        let pass = percent_decode(url.password().unwrap_or_default());
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| TunnelError(format!("{shown}: {e}")))?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing after the proxy's answer is consumed.
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= MAX_CONNECT_ANSWER {
            return Err(TunnelError(format!("{shown} sent an oversized answer")));
        }
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|e| TunnelError(format!("{shown}: {e}")))?;
        if n == 0 {
            return Err(TunnelError(format!("{shown} closed the connection")));
        }
        answer.extend_from_slice(&byte);
    }
    let status = answer
        .split(|b| *b == b' ')
        .nth(1)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(stream),
        Some(code) => Err(TunnelError(format!(
            "{shown} refused the tunnel (HTTP {code})"
        ))),
        None => Err(TunnelError(format!("{shown} sent an unreadable answer"))),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes.get(i), hex) {
            (Some(b'%'), Some(v)) => {
                out.push(v);
                i += 3;
            }
            (Some(b), _) => {
                out.push(*b);
                i += 1;
            }
            (None, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_proxy_follows_the_scheme_and_no_proxy() {
        let wss = |env: &dyn Fn(&str) -> Option<String>| proxy_for(true, "gw.corp.example", env);
        let ws = |env: &dyn Fn(&str) -> Option<String>| proxy_for(false, "127.0.0.1", env);
        let vars = env(&[
            ("https_proxy", "http://p:3128"),
            ("HTTP_PROXY", "http://q:8080"),
        ]);
        assert_eq!(wss(&vars).as_deref(), Some("http://p:3128"));
        assert_eq!(ws(&vars).as_deref(), Some("http://q:8080"));
        let all = env(&[("ALL_PROXY", "http://a:1")]);
        assert_eq!(wss(&all).as_deref(), Some("http://a:1"));
        assert_eq!(
            proxy_for(
                true,
                "[::1]",
                env(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "::1")])
            ),
            None
        );
        for no_proxy in ["corp.example", ".corp.example", "*", "x, gw.corp.example"] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([
                ("HTTPS_PROXY", "http://p:3128"),
                ("NO_PROXY", no_proxy),
            ]));
            assert_eq!(wss(&env(pairs)), None, "{no_proxy}");
        }
        let other = env(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("NO_PROXY", "example.org"),
        ]);
        assert!(wss(&other).is_some());
        assert_eq!(wss(&env(&[])), None);
    }

    #[test]
    fn no_proxy_address_ranges_exempt_the_addresses_in_them() {
        let vars = |no_proxy: &'static str| {
            move |name: &str| match name {
                "HTTPS_PROXY" => Some("http://p:3128".to_owned()),
                "NO_PROXY" => Some(no_proxy.to_owned()),
                _ => None,
            }
        };
        for (host, no_proxy) in [
            ("10.1.2.3", "10.0.0.0/8"),
            ("10.1.2.3", "localhost, 10.1.2.3/32"),
            ("192.168.7.9", "192.168.0.0/16"),
            ("8.8.8.8", "0.0.0.0/0"),
            ("[fd00::1]", "fd00::/8"),
            ("fd12:3456::9", "[fd12:3456::]/32"),
        ] {
            assert_eq!(
                proxy_for(true, host, vars(no_proxy)),
                None,
                "{host} in {no_proxy}"
            );
        }
        for (host, no_proxy) in [
            ("11.1.2.3", "10.0.0.0/8"),
            ("10.1.2.4", "10.1.2.3/32"),
            ("192.169.0.1", "192.168.0.0/16"),
            ("10.1.2.3", "10.0.0.0/33"),
            ("10.1.2.3", "fd00::/8"),
            ("fe00::1", "fd00::/8"),
            ("gw.corp.example", "10.0.0.0/8"),
            ("10.1.2.3", "10.0.0.0/x"),
        ] {
            assert!(
                proxy_for(true, host, vars(no_proxy)).is_some(),
                "{host} not in {no_proxy}"
            );
        }
    }

    #[test]
    fn a_proxy_setting_without_a_scheme_is_http_and_other_schemes_are_named() {
        let url = proxy_url("proxy.corp.example:3128").ok().unwrap();
        assert_eq!(
            (url.scheme(), url.host_str(), url.port()),
            ("http", Some("proxy.corp.example"), Some(3128))
        );
        let url = proxy_url(" http://user:pw@10.0.0.1:8080 ").ok().unwrap();
        assert_eq!((url.host_str(), url.port()), (Some("10.0.0.1"), Some(8080)));
        for (setting, message) in [
            (
                "https://proxy.corp.example:3128",
                "proxy scheme `https` is not supported (use an http:// proxy)",
            ),
            (
                "socks5://127.0.0.1:1080",
                "proxy scheme `socks5` is not supported (use an http:// proxy)",
            ),
            ("http://", "the proxy setting is not a URL"),
        ] {
            assert_eq!(proxy_url(setting).err().unwrap().0, message, "{setting}");
        }
    }

    #[test]
    fn percent_decoding_of_proxy_credentials() {
        assert_eq!(percent_decode("a%40b%3Ac"), "a@b:c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
