//! The public HTTP API. Every error is `{"error":{"code","message"}}`.
pub mod admin;
pub mod lifecycle;
mod openapi;
pub mod orders;
pub mod sales;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(seckill_common::service::health_routes)
        .service(
            web::scope("/api/v1")
                .route("/openapi.json", web::get().to(openapi::openapi_json))
                .route("/admin/sales", web::post().to(admin::create_sale))
                .route("/sales", web::get().to(sales::list_sales))
                .route("/sales/{sale_id}", web::get().to(sales::get_sale))
                .route(
                    "/sales/{sale_id}/purchase-token",
                    web::get().to(sales::purchase_token),
                )
                .route(
                    "/sales/{sale_id}/orders",
                    web::post().to(orders::place_order),
                )
                .route("/orders/{order_id}", web::get().to(orders::get_order))
                .route(
                    "/orders/{order_id}/pay",
                    web::post().to(lifecycle::pay_order),
                )
                .route(
                    "/orders/{order_id}/cancel",
                    web::post().to(lifecycle::cancel_order),
                )
                .route("/users/me/orders", web::get().to(lifecycle::my_orders))
                .route("/admin/reconcile", web::post().to(admin::reconcile)),
        );
}
