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
//! and an unchanged page costs a 304.
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
        if req.method() != Method::GET {
            return None;
        }
        let asset = self.files.get(req.path())?;
        let started = Instant::now();
        let unchanged = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|tag| tag.as_bytes() == asset.etag.as_bytes());
        let mut answer = if unchanged {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        answer
            .insert_header((header::ETAG, asset.etag.as_str()))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
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
                answer
                    .content_type(asset.content_type)
                    .body(asset.body.clone()),
                &self.served,
            )
        };
        metrics.observe(started.elapsed());
        Some(response)
    }
}
