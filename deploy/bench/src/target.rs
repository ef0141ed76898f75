//! Where the load goes. Only loopback addresses are accepted: this tool must
//! never be pointed at a machine other than the one it runs on.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hyper::header::HeaderValue;
use hyper::Uri;

use crate::error::{usage, BenchError, Result};

/// A parsed `http://` URL on this machine.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub authority: HeaderValue,
    /// Path and query, sent as the request target.
    pub path: Uri,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| usage(format!("invalid URL {url}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(usage(format!("{url}: only http:// URLs are supported")));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| usage(format!("{url}: no host")))?;
        let ip = loopback_ip(authority.host())?;
        let addr = SocketAddr::new(ip, authority.port_u16().unwrap_or(80));
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|e| usage(format!("{url}: {e}")))?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| usage(format!("{url}: {e}")))?;
        Ok(Self {
            addr,
            authority: host,
            path,
        })
    }

    /// The same server, another path (`/api/v1/...`).
    pub fn with_path(&self, path: &str) -> Result<Self> {
        let path = path
            .parse()
            .map_err(|e| usage(format!("invalid path {path}: {e}")))?;
        Ok(Self {
            path,
            ..self.clone()
        })
    }
}

/// `localhost` or a loopback IP literal (brackets allowed for IPv6).
pub fn loopback_ip(host: &str) -> Result<IpAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    bare.parse::<IpAddr>()
        .ok()
        .filter(IpAddr::is_loopback)
        .ok_or_else(|| BenchError::NotLoopback(host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_only() {
        for ok in [
            "http://127.0.0.1:8080/api/v1/x",
            "http://localhost/",
            "http://[::1]:9000",
            "http://127.3.2.1:1",
        ] {
            assert!(Target::parse(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.1:8080/",
            "http://192.168.1.2/",
            "http://example.com/",
            "http://0.0.0.0:8080/",
        ] {
            assert!(
                matches!(Target::parse(refused), Err(BenchError::NotLoopback(_))),
                "{refused}"
            );
        }
        assert!(Target::parse("https://127.0.0.1/").is_err());
    }

    #[test]
    fn keeps_path_and_host_header() {
        let t = Target::parse("http://localhost:8080/a/b?c=1").unwrap();
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.authority, "localhost:8080");
        assert_eq!(t.path, "/a/b?c=1");
        assert_eq!(t.with_path("/z").unwrap().path, "/z");
        assert_eq!(Target::parse("http://127.0.0.1").unwrap().path, "/");
    }
}
