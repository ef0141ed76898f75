//! The OpenAPI 3 document of the public API, generated from the handlers'
//! `#[utoipa::path]` attributes and the types in `crate::api`, served at
//! `/api/v1/openapi.json`. The test command runs schemathesis against the
//! running gateway with it (`tests/tests/input_properties/contract.rs`).
use std::sync::LazyLock;

use actix_web::http::header::ContentType;
use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use seckill_common::http::{ErrorBody, ErrorDetail};
use seckill_common::sale_terms::SaleTermsRequest;

use crate::api::{
    Accepted, ConsumerView, GatewayCounts, LatencyBucket, LatencyHistogram, LiveSale, OrderList,
    OrderState, OrderView, PurchaseToken, ReconcileReport, SaleRecord, SaleStatus, SaleView,
    ServerTime,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "seckill gateway",
        description = "The public API of a flash sale. Every error answer is `{\"error\":{\"code\",\"message\"}}`; `code` is stable."
    ),
    paths(
        super::sales::list_sales,
        super::sales::get_sale,
        super::sales::purchase_token,
        super::orders::place_order,
        super::orders::get_order,
        super::lifecycle::pay_order,
        super::lifecycle::cancel_order,
        super::lifecycle::my_orders,
        super::admin::create_sale,
        super::admin::reconcile,
        super::storefront::server_time,
        super::console::live_sale,
    ),
    components(schemas(
        SaleView, SaleStatus, SaleRecord, OrderView, OrderState, OrderList, Accepted,
        PurchaseToken, ReconcileReport, SaleTermsRequest, ErrorBody, ErrorDetail,
        super::orders::PurchaseBody, crate::catalog::Page, ServerTime, LiveSale, GatewayCounts,
        LatencyHistogram, LatencyBucket, ConsumerView
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "shop", description = "What shoppers call, with a user's JWT as the bearer token"),
        (name = "admin", description = "What operators call, with the admin token as the bearer token"),
    )
)]
struct ApiDoc;

/// The two bearers: a user's JWT, and the operators' admin token.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let jwt = Http::builder()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .build();
        components.add_security_scheme("user", SecurityScheme::Http(jwt));
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Rendered once: the document cannot change while the process runs.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|error| format!(r#"{{"error":"{error}"}}"#))
});

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(DOCUMENT.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_under_api_v1_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).expect("JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/api/v1/sales", "get"),
            ("/api/v1/sales/{sale_id}", "get"),
            ("/api/v1/sales/{sale_id}/purchase-token", "get"),
            ("/api/v1/sales/{sale_id}/orders", "post"),
            ("/api/v1/orders/{order_id}", "get"),
            ("/api/v1/orders/{order_id}/pay", "post"),
            ("/api/v1/orders/{order_id}/cancel", "post"),
            ("/api/v1/users/me/orders", "get"),
            ("/api/v1/admin/sales", "post"),
            ("/api/v1/admin/reconcile", "post"),
            ("/api/v1/admin/sales/{sale_id}/live", "get"),
            ("/api/v1/time", "get"),
        ] {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
        // Not `/api/v1/dev/sign-in`: routed only on development machines
        // (`dev_sign_in`), it is no part of the contract.
        assert_eq!(paths.len(), 12, "{:?}", paths.keys().collect::<Vec<_>>());
    }
}
