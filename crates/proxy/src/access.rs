//! Who may use the proxy: the client key (constant-time compare), the `Host` check against
//! DNS rebinding, the `Origin` check against web pages on other sites, and (without a
//! client key, on Linux) the local user behind a loopback connection.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, header};

/// Whether the process behind a loopback connection belongs to another local user: the
/// owner of the client's socket, asked of the kernel (`sock_diag`), is neither this
/// process's user nor root. `false` when it cannot be told (not Linux, the socket
/// already gone): the other checks still apply.
pub(crate) fn another_local_user(peer: SocketAddr, local: SocketAddr) -> bool {
    if !cfg!(target_os = "linux") || !peer.ip().is_loopback() {
        return false;
    }
    let own = nix::unistd::geteuid().as_raw();
    socket_owner(peer, local).is_some_and(|uid| uid != own && uid != 0)
}

/// The uid that owns the TCP socket whose local end is `peer` and remote end is `local`:
/// one `SOCK_DIAG_BY_FAMILY` query to the kernel over netlink, for that exact socket (what
/// `ss -tpe` asks), so the cost does not grow with the number of open sockets.
#[cfg(target_os = "linux")]
fn socket_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        socket,
    };
    use std::os::fd::AsRawFd as _;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_HEADER: usize = 16;
    const IPPROTO_TCP: u8 = 6;
    // `inet_diag_msg`: family, state, timer, retrans, the 48-byte socket id, expires,
    // rqueue, wqueue, then uid.
    const UID_AT: usize = NLMSG_HEADER + 4 + 48 + 12;

    let family: u8 = match peer {
        SocketAddr::V4(_) => 2,
        SocketAddr::V6(_) => 10,
    };
    // `inet_diag_req_v2`: family, protocol, ext, pad, states (all), then the socket id:
    // source and destination ports and addresses (network order), interface, no cookie.
    let mut request = Vec::with_capacity(NLMSG_HEADER + 56);
    request.extend_from_slice(&u32::try_from(NLMSG_HEADER + 56).ok()?.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    request.extend_from_slice(&peer.port().to_be_bytes());
    request.extend_from_slice(&local.port().to_be_bytes());
    for addr in [peer.ip(), local.ip()] {
        let mut bytes = [0u8; 16];
        match addr {
            IpAddr::V4(ip) => bytes[..4].copy_from_slice(&ip.octets()),
            IpAddr::V6(ip) => bytes = ip.octets(),
        }
        request.extend_from_slice(&bytes);
    }
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes());

    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    sendto(
        fd.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    // The kernel answers within the send: nothing to wait for.
    let mut answer = [0u8; 512];
    let n = recv(fd.as_raw_fd(), &mut answer, MsgFlags::MSG_DONTWAIT).ok()?;
    let answer = answer.get(..n)?;
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if kind != SOCK_DIAG_BY_FAMILY {
        // NLMSG_ERROR: no such socket (it closed), or the query is not allowed here.
        return None;
    }
    Some(u32::from_ne_bytes(
        answer.get(UID_AT..UID_AT + 4)?.try_into().ok()?,
    ))
}

#[cfg(not(target_os = "linux"))]
fn socket_owner(_peer: SocketAddr, _local: SocketAddr) -> Option<u32> {
    None
}

/// Whether `headers` present `key` as `Authorization: Bearer KEY`, `api-key` or `x-api-key`.
pub(crate) fn presents_key(headers: &HeaderMap, key: &[u8]) -> bool {
    // Every candidate is compared, whatever an earlier one gave.
    presented_keys(headers).fold(false, |found, given| constant_time_eq(given, key) | found)
}

/// What `headers` present as a key: `Authorization: Bearer KEY`, `api-key`, `x-api-key`.
pub(crate) fn presented_keys(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
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
    bearer.chain(plain)
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

    /// A real loopback connection's client socket is found, owned by this process's user,
    /// over IPv4 and (where the machine has it) IPv6; a socket that does not exist has none.
    #[test]
    fn the_owner_of_a_loopback_client_socket_is_read() {
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = std::net::TcpListener::bind(listen) else {
                assert_ne!(listen, "127.0.0.1:0", "no IPv4 loopback");
                continue;
            };
            let local = listener.local_addr().unwrap();
            let client = std::net::TcpStream::connect(local).unwrap();
            let (_server, peer) = listener.accept().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            if cfg!(target_os = "linux") {
                assert_eq!(
                    socket_owner(peer, local),
                    Some(nix::unistd::geteuid().as_raw())
                );
            }
            assert!(!another_local_user(peer, local));
        }
        let gone: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(socket_owner(gone, "127.0.0.1:8".parse().unwrap()), None);
    }
}
