//! Which client a request comes from, for the per-client rate limit.
//!
//! Behind an ingress controller or a load balancer the TCP peer is the proxy,
//! so keying the limit by the peer puts every user in the proxy's bucket: the
//! per-client limit silently becomes a global one, and in a flash sale it
//! refuses the crowd. A peer listed in `rate_limit.trusted_proxies` is
//! trusted to name its client in `X-Forwarded-For`; from anyone else the
//! header is ignored, because a client can write anything into it.
use std::net::IpAddr;

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// Parsed once, with the settings (`SECKILL_RATE_LIMIT__TRUSTED_PROXIES`).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxies(Vec<IpNet>);

impl TryFrom<String> for TrustedProxies {
    type Error = String;
    fn try_from(list: String) -> Result<Self, Self::Error> {
        Self::parse(&list)
    }
}

impl From<TrustedProxies> for String {
    fn from(proxies: TrustedProxies) -> String {
        let nets: Vec<String> = proxies.0.iter().map(IpNet::to_string).collect();
        nets.join(",")
    }
}

impl TrustedProxies {
    /// A comma-separated list of addresses and CIDR ranges; empty trusts no one.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR range"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The peer, unless the peer is a trusted proxy: then the nearest address
    /// in `X-Forwarded-For` (read right to left, as each proxy appends the
    /// one it saw) that is not itself a trusted proxy. A malformed entry
    /// ends the walk at the last address that could be believed.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(&peer) {
            return Some(peer);
        }
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.trusts(&ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static(FORWARDED_FOR),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let forged = headers(&["198.51.100.1"]);
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &forged),
            ip("203.0.113.9")
        );
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client(ip("10.1.2.3"), &forged), ip("10.1.2.3"));
    }

    #[test]
    fn a_trusted_peer_names_the_nearest_untrusted_hop() {
        let trusted = TrustedProxies::parse(" 10.0.0.0/8, 127.0.0.1 ,::1").unwrap();
        // client, then an untrusted hop it may have forged, then our own proxy.
        let chain = headers(&["192.0.2.77, 198.51.100.1", "10.9.9.9"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &chain), ip("198.51.100.1"));
        assert_eq!(
            trusted.client(ip("::1"), &headers(&["2001:db8::5"])),
            ip("2001:db8::5")
        );
        // No header, or only trusted hops: the last trusted address.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &headers(&[])),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &headers(&["10.7.7.7"])),
            ip("10.7.7.7")
        );
        // Garbage stops the walk where the chain could still be believed.
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &headers(&["192.0.2.1, not-an-ip"])),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn a_bad_list_is_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
    }
}
