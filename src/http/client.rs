//! Who is calling, as an address: the peer of the connection, or, behind a configured
//! proxy, the address that proxy says it forwarded for. The login throttle keeps a
//! budget per account and client address.

use super::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// Proxies whose `X-Forwarded-For` is believed (`KILLRVIDEO_TRUSTED_PROXIES`): addresses
/// and CIDR blocks. Empty, the default: the header is ignored, because anyone can send
/// it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 127.0.0.1, ::1`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        const ACCEPTS: &str =
            "comma-separated IP addresses or CIDR blocks such as `10.0.0.0/8` or `::1`";
        let mut blocks = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (address, bits) = match entry.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (entry, None),
            };
            let address: IpAddr = address.parse().map_err(|_| ACCEPTS.to_owned())?;
            let width = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => width,
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= width)
                    .ok_or_else(|| ACCEPTS.to_owned())?,
            };
            blocks.push((address, bits));
        }
        Ok(Self(blocks))
    }

    /// True when `address` is one of the proxies.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0
            .iter()
            .any(|(block, bits)| in_block(address, *block, *bits))
    }

    /// The client of a request that reached us from `peer` with these
    /// `X-Forwarded-For` values: walking the forwarded-for chain from the nearest hop,
    /// the first address that is not a trusted proxy. A malformed entry ends the walk
    /// at the last trusted hop's word for it: the hop before it.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let mut client = peer;
        if !self.contains(peer) {
            return client;
        }
        let hops = forwarded_for
            .iter()
            .rev()
            .flat_map(|value| value.rsplit(','))
            .map(str::trim);
        for hop in hops {
            match hop.parse::<IpAddr>() {
                Ok(address) => {
                    client = address;
                    if !self.contains(address) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

fn in_block(address: IpAddr, block: IpAddr, bits: u8) -> bool {
    match (address, block) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The caller's address. A request that did not come through a socket (a test's
/// `oneshot`) is `0.0.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(peer)| peer.ip());
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(ClientAddress(
            state.trusted_proxies.client(peer, &forwarded),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn blocks_and_addresses() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1, ::1").unwrap();
        assert!(proxies.contains(ip("10.20.30.40")));
        assert!(proxies.contains(ip("127.0.0.1")));
        assert!(!proxies.contains(ip("127.0.0.2")));
        assert!(proxies.contains(ip("::1")));
        assert!(!proxies.contains(ip("11.0.0.1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.1/x"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_nearest() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // Not from a proxy: the header is the caller's own claim and is ignored.
        assert_eq!(
            proxies.client(ip("203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        // From a proxy: the address it forwarded for.
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &["198.51.100.7"]),
            ip("198.51.100.7")
        );
        // A client's forged first entry is passed over: the nearest untrusted hop wins.
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &["6.6.6.6, 198.51.100.7, 10.0.0.3"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &["6.6.6.6", "198.51.100.7"]),
            ip("198.51.100.7"),
            "several headers are one list"
        );
        assert_eq!(proxies.client(ip("10.0.0.2"), &["garbage"]), ip("10.0.0.2"));
        assert_eq!(proxies.client(ip("10.0.0.2"), &[]), ip("10.0.0.2"));
    }
}
