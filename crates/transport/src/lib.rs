//! Reaching a gateway through an HTTP proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`) with a `CONNECT` tunnel, the settings read by the very matcher the HTTP client
//! (reqwest) uses (`hyper_util::client::proxy::matcher`), so both honour them alike: one [`connect_tcp`] for the websocket client (`realtime`) and for every upstream
//! connection of the `proxy` crate, so both go the same way.
//!
//! A refusal says which proxy and what it answered (`proxy HOST:PORT refused the tunnel
//! (HTTP 407)`), never the proxy's credentials.
//!
//! And the one TLS client configuration ([`tls_config`]): rustls with the platform's trust
//! store, built once per process, for the websocket client and the proxy alike.

use std::sync::{Arc, OnceLock};

use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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
    match proxy_for(secure, host, &Matcher::from_env()) {
        Some(proxy) => tunnel(&proxy, host, port)
            .await
            .map_err(|e| std::io::Error::other(e.0)),
        None => TcpStream::connect((host, port)).await,
    }
}

/// The proxy for `host` by `matcher`'s rules (reqwest's, and curl's): `HTTPS_PROXY` for a
/// secure target, `HTTP_PROXY` for a plain one (upper or lower case), else `ALL_PROXY`;
/// `NO_PROXY` exempts hosts (`*`, names with their subdomains, addresses and ranges such as
/// `10.0.0.0/8`); nothing while serving CGI (`REQUEST_METHOD` set).
fn proxy_for(secure: bool, host: &str, matcher: &Matcher) -> Option<Intercept> {
    let authority = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let target = http::Uri::builder()
        .scheme(if secure { "https" } else { "http" })
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()?;
    matcher.intercept(&target)
}

/// Why a tunnel could not be opened. Never holds proxy credentials.
#[derive(Debug)]
struct TunnelError(String);

/// Opens a TCP connection to `target_host:target_port` through the HTTP proxy `proxy`.
async fn tunnel(
    proxy: &Intercept,
    target_host: &str,
    target_port: u16,
) -> Result<TcpStream, TunnelError> {
    let uri = proxy.uri();
    let scheme = uri.scheme_str().unwrap_or("http");
    if scheme != "http" {
        return Err(TunnelError(format!(
            "proxy scheme `{scheme}` is not supported (use an http:// proxy)"
        )));
    }
    let proxy_host = uri
        .host()
        .ok_or_else(|| TunnelError("the proxy URL has no host".to_owned()))?
        .trim_matches(['[', ']']);
    let proxy_port = uri.port_u16().unwrap_or(80);
    let shown = format!("proxy {proxy_host}:{proxy_port}");
    let mut stream = TcpStream::connect((proxy_host, proxy_port))
        .await
        .map_err(|e| TunnelError(format!("cannot reach {shown}: {e}")))?;
    let authority = if target_host.contains(':') {
        format!("[{target_host}]:{target_port}")
    } else {
        format!("{target_host}:{target_port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(basic) = proxy.basic_auth() {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(basic.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream
        .write_all(&request)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(https: &str, http: &str, all: &str, no: &str) -> Matcher {
        Matcher::builder()
            .https(https)
            .http(http)
            .all(all)
            .no(no)
            .build()
    }

    fn shown(proxy: Option<Intercept>) -> Option<String> {
        proxy.map(|p| p.uri().to_string())
    }

    #[test]
    fn the_proxy_follows_the_scheme_and_no_proxy() {
        let both = matcher("http://p:3128", "http://q:8080", "", "");
        assert_eq!(
            shown(proxy_for(true, "gw.corp.example", &both)).as_deref(),
            Some("http://p:3128/")
        );
        assert_eq!(
            shown(proxy_for(false, "127.0.0.1", &both)).as_deref(),
            Some("http://q:8080/")
        );
        let all = matcher("", "", "http://a:1", "");
        assert_eq!(
            shown(proxy_for(true, "gw.corp.example", &all)).as_deref(),
            Some("http://a:1/")
        );
        let v6 = matcher("http://p:3128", "", "", "::1");
        assert!(proxy_for(true, "::1", &v6).is_none());
        for no_proxy in ["corp.example", ".corp.example", "*", "x, gw.corp.example"] {
            let m = matcher("http://p:3128", "", "", no_proxy);
            assert!(
                proxy_for(true, "gw.corp.example", &m).is_none(),
                "{no_proxy}"
            );
        }
        let other = matcher("http://p:3128", "", "", "example.org");
        assert!(proxy_for(true, "gw.corp.example", &other).is_some());
        assert!(proxy_for(true, "gw.corp.example", &matcher("", "", "", "")).is_none());
    }

    #[test]
    fn no_proxy_address_ranges_exempt_the_addresses_in_them() {
        for (host, no_proxy) in [
            ("10.1.2.3", "10.0.0.0/8"),
            ("10.1.2.3", "localhost, 10.1.2.3/32"),
            ("192.168.7.9", "192.168.0.0/16"),
            ("8.8.8.8", "0.0.0.0/0"),
            ("fd00::1", "fd00::/8"),
        ] {
            let m = matcher("http://p:3128", "", "", no_proxy);
            assert!(proxy_for(true, host, &m).is_none(), "{host} in {no_proxy}");
        }
        for (host, no_proxy) in [
            ("11.1.2.3", "10.0.0.0/8"),
            ("10.1.2.4", "10.1.2.3/32"),
            ("192.169.0.1", "192.168.0.0/16"),
            ("10.1.2.3", "fd00::/8"),
            ("fe00::1", "fd00::/8"),
            ("gw.corp.example", "10.0.0.0/8"),
            ("10.1.2.3", "10.0.0.0/33"),
            ("10.1.2.3", "10.0.0.0/x"),
        ] {
            let m = matcher("http://p:3128", "", "", no_proxy);
            assert!(
                proxy_for(true, host, &m).is_some(),
                "{host} not in {no_proxy}"
            );
        }
    }

    #[test]
    fn a_proxy_without_a_scheme_is_http_and_its_credentials_are_basic() {
        let m = matcher("proxy.corp.example:3128", "", "", "");
        assert_eq!(
            shown(proxy_for(true, "gw", &m)).as_deref(),
            Some("http://proxy.corp.example:3128/")
        );
        let m = matcher("http://a%40b:c%3Ad@10.0.0.1:8080", "", "", "");
        let proxy = proxy_for(true, "gw", &m).expect("a proxy");
        // The credentials go in the header only (percent-decoded), never in what is shown.
        assert_eq!(proxy.uri().to_string(), "http://10.0.0.1:8080/");
        let basic = proxy.basic_auth().expect("credentials");
        assert!(basic.is_sensitive());
        // "a@b:c:d" in base64.
        assert_eq!(basic.as_bytes(), b"Basic YUBiOmM6ZA==");
    }

    #[tokio::test]
    async fn a_proxy_of_another_scheme_is_refused_by_name() {
        for (setting, message) in [
            (
                "https://proxy.corp.example:3128",
                "proxy scheme `https` is not supported (use an http:// proxy)",
            ),
            (
                "socks5://127.0.0.1:1080",
                "proxy scheme `socks5` is not supported (use an http:// proxy)",
            ),
        ] {
            let m = matcher(setting, "", "", "");
            let proxy = proxy_for(true, "gw", &m).expect("a proxy");
            let err = tunnel(&proxy, "gw", 443).await.expect_err("refused");
            assert_eq!(err.0, message, "{setting}");
        }
    }
}
