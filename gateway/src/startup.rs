//! Builds the gateway from its settings (zero2prod's `Application`), so that
//! `main` and the tests start exactly the same thing. What every service
//! shares is in `seckill_common::service`.
use std::sync::Arc;

use actix_web::{web, App};
use anyhow::Context;

use seckill_common::http::{json_config, not_found, path_config, query_config};
use seckill_common::internal_auth::InternalToken;
use seckill_common::metrics::{self, HttpMetrics};
use seckill_common::service::{Core, Probes, Running};
use seckill_common::shutdown::Shutdown;
use seckill_common::transport::Publisher;

use crate::auth::{AdminToken, JwtKeys};
use crate::breaker::Breakers;
use crate::catalog::{CachedReads, Catalog, CatalogMetrics};
use crate::clients::{InventoryClient, OrderClient};
use crate::configuration::Settings;
use crate::limits::{Admission, Limits};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::purchase_token::PurchaseTokens;
use crate::sold_out::{SoldOutAnswer, SoldOutCache};
use crate::state::AppState;
use crate::storefront::Storefront;
use crate::upstream::Upstream;

pub struct Application(Running);

impl Application {
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        settings.check_secrets()?;
        let core = Core::start(settings.bus(), shutdown).await?;
        let redis = core.redis(&settings.redis).await?;

        let limits = Arc::new(Limits::new(&settings.rate_limit, settings.max_in_flight));
        core.tasks.spawn(
            "limits-housekeeping",
            limits.clone().housekeeping(core.shutdown.clone()),
        );
        let metrics = Metrics::new(&core.registry)?;
        let http_metrics = HttpMetrics::new(&core.registry)?;
        let upstream = Upstream::new(
            settings.upstream_timeout,
            &InternalToken::new(&settings.internal_token),
        )?;
        let request_timeout = settings.request_timeout;
        let admission = web::Data::new(Admission {
            limits: limits.clone(),
            trusted_proxies: settings.rate_limit.trusted_proxies.clone(),
            request_timeout,
        });
        let breakers = Breakers::new(settings.breaker, &core.registry)?;
        let inventory = InventoryClient::new(
            upstream.clone(),
            &settings.inventory_url,
            breakers.inventory.clone(),
        );
        let catalog = Arc::new(Catalog::new(
            settings.read_cache.clone(),
            redis.clone(),
            breakers.redis.clone(),
            settings.redis.response_timeout,
            inventory.clone(),
            CatalogMetrics::new(&core.registry)?,
        ));
        // Before serving, so a new gateway answers its first crowd from
        // memory; a failure here only means the first reads fill on demand.
        match catalog.warm().await {
            Ok(sales) => tracing::info!(sales, "read cache warmed"),
            Err(e) => tracing::warn!(error = %e, "read cache not warmed; reads fill on demand"),
        }
        core.tasks.spawn(
            "read-cache-warmer",
            catalog.clone().keep_warm(core.shutdown.clone()),
        );
        let probes = web::Data::new(Probes::new(core.producer.clone()).with_redis(redis.clone()));
        let state = web::Data::new(AppState {
            redis,
            redis_settings: settings.redis.clone(),
            producer: match &core.producer {
                Publisher::Kafka(producer) => Some(producer.clone()),
                Publisher::Streams(_) => None,
            },
            topics: settings.kafka.topics(),
            sold_out: SoldOutCache::new(settings.sold_out_cache),
            sold_out_answer: SoldOutAnswer::new(&http_metrics)?,
            cached_reads: CachedReads::new(&http_metrics)?,
            limits,
            inventory,
            catalog,
            orders: OrderClient::new(upstream, &settings.order_url, breakers.orders.clone()),
            breakers,
            metrics,
            purchase_tokens: PurchaseTokens::new(
                settings.jwt_secret.clone(),
                settings.purchase_token_ttl_secs,
                settings.purchase_token_lead_secs,
            ),
            tasks: core.tasks.clone(),
            redis_timeout: settings.redis.response_timeout,
            unknown_outcome_resolve: settings.unknown_outcome_resolve,
            request_timeout,
            max_body_bytes: settings.max_body_bytes,
            storefront: Storefront::new(&http_metrics)?,
        });
        let live = web::Data::new(Live::new(core.registry.clone()));
        let jwt = web::Data::new(JwtKeys::new(
            &settings.jwt_secret,
            settings.jwt_leeway_secs,
        )?);
        let admin = web::Data::new(AdminToken(settings.admin_token.clone()));

        let metrics_here = core.metrics_here(&settings.http)?;
        let max_body = settings.max_body_bytes;
        let dev_sign_in = settings.dev_sign_in;
        let server = core.serve(&settings.http, move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(crate::limits::admit))
                .wrap(seckill_common::request_span::middleware())
                .wrap(http_metrics.clone())
                // Outermost: what memory answers (a known sold-out sale, a cached
                // read) is answered before anything else.
                .wrap(actix_web::middleware::from_fn(
                    crate::front_door::answer_from_memory,
                ))
                .app_data(state.clone())
                .app_data(admission.clone())
                .app_data(probes.clone())
                .app_data(jwt.clone())
                .app_data(admin.clone())
                .app_data(live.clone())
                .app_data(json_config(max_body))
                .app_data(path_config())
                .app_data(query_config())
                .configure(|cfg| crate::routes::configure(cfg, dev_sign_in))
                .configure(metrics::endpoint_if(metrics_here.as_ref()))
                .default_service(web::to(not_found))
        })?;
        Ok(Self(core.running("gateway", server)))
    }

    /// Serves until shutdown fires; then stops accepting, finishes requests
    /// in flight and the purchases they started (each enqueued or undone),
    /// and flushes the producer so nothing acknowledged is lost.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.until_stopped().await.context("HTTP server failed")
    }
}
