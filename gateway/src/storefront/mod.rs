//! The storefront (`/`) and the operators' console (`/console`): plain HTML,
//! CSS and JavaScript compiled into the binary (`gateway/web/`), so a
//! gateway image serves its own pages and nothing is fetched from elsewhere.
//!
//! Why here, in the gateway, and answered at the front door: the crowd that
//! loads the page at the start of a sale is the crowd that buys, and its page
//! loads must not compete with its purchases. Every file is in memory, its
//! headers rendered once; an answer is a lookup and a clone of `Bytes`, with
//! no rate limiter, span or router in the way (docs/benchmarks.md has the
//! cost beside `/healthz`'s).
//!
//! Assets are named by their content (`/assets/storefront.<hash>.js`) and
//! cached for a year, `immutable`; the two pages are revalidated on every
//! load (`no-cache` with an `ETag`), so a new release is picked up at once
//! and an unchanged page costs a 304. Each file is gzipped once, at start,
//! for the clients that take it: the crowd's bytes, not the gateway's CPU.
mod assets;

use std::collections::HashMap;
use std::time::Instant;

use actix_web::dev::ServiceRequest;
use actix_web::http::{header, Method};
use actix_web::HttpResponse;

use seckill_common::metrics::{HttpMetrics, RouteMetrics};

use self::assets::{Asset, Kind};

/// Every file, by the path it is served at.
pub struct Storefront {
    files: HashMap<String, Asset>,
    served: RouteMetrics,
    not_modified: RouteMetrics,
}

/// Pages may run only this origin's scripts and styles, and talk only to it.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

impl Storefront {
    pub fn new(http: &HttpMetrics) -> Result<Self, prometheus::Error> {
        Ok(Self {
            files: assets::all(),
            served: http.route(&Method::GET, "storefront", 200)?,
            not_modified: http.route(&Method::GET, "storefront", 304)?,
        })
    }

    /// The answer to a GET of one of the files, or `None` for any other
    /// request (which goes on to the router).
    pub fn answer(&self, req: &ServiceRequest) -> Option<HttpResponse> {
        if !may_serve(req) {
            return None;
        }
        let asset = self.files.get(req.path())?;
        let started = Instant::now();
        let (body, etag, gzip) = match &asset.gzip {
            Some((gz, etag)) if accepts_gzip(req) => (gz, etag, true),
            _ => (&asset.body, &asset.etag, false),
        };
        let unchanged = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|tag| tag.as_bytes() == etag.as_bytes());
        let mut answer = if unchanged {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        answer
            .insert_header((header::ETAG, etag.as_str()))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        if asset.gzip.is_some() {
            answer.insert_header((header::VARY, "Accept-Encoding"));
        }
        if gzip {
            answer.insert_header((header::CONTENT_ENCODING, "gzip"));
        }
        match asset.kind {
            Kind::Page => answer
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_POLICY))
                .insert_header((header::REFERRER_POLICY, "no-referrer")),
            Kind::Asset => {
                answer.insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            }
        };
        let (response, metrics) = if unchanged {
            (answer.finish(), &self.not_modified)
        } else {
            (
                answer.content_type(asset.content_type).body(body.clone()),
                &self.served,
            )
        };
        metrics.observe(started.elapsed());
        Some(response)
    }
}

/// Whether `req` could be for one of the files: GET or HEAD (actix sends
/// the head of the GET answer, without its body) of a page or an asset path.
/// Every request passes here, purchases included, so two comparisons and a
/// prefix decide before anything is looked up or hashed.
pub fn may_serve(req: &ServiceRequest) -> bool {
    let path = req.path();
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && (path == "/" || path == "/console" || path.starts_with("/assets/"))
}

/// Whether the client takes gzip: a `gzip` coding in `Accept-Encoding`
/// without `q=0` (browsers send `gzip, deflate, br, zstd`).
fn accepts_gzip(req: &ServiceRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"))
                && parts.all(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_none_or(|q| q > 0.0)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn with(accept: &str) -> ServiceRequest {
        TestRequest::get()
            .insert_header((header::ACCEPT_ENCODING, accept))
            .to_srv_request()
    }

    #[test]
    fn gzip_is_sent_only_to_who_takes_it() {
        assert!(accepts_gzip(&with("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(&with("br;q=1.0, GZIP;q=0.5")));
        assert!(!accepts_gzip(&with("br, zstd")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("gzip; q=0.000")));
        assert!(accepts_gzip(&with("gzip;q=0.05")));
        assert!(!accepts_gzip(&TestRequest::get().to_srv_request()));
    }
}
