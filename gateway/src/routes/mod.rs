//! The public HTTP API. Every error is `{"error":{"code","message"}}`.
pub mod admin;
pub mod console;
pub mod lifecycle;
mod openapi;
pub mod orders;
pub mod sales;
pub mod storefront;

use actix_web::web;

/// The routes; `dev_sign_in` adds the development sign-in
/// (`storefront::dev_sign_in`).
pub fn configure(cfg: &mut web::ServiceConfig, dev_sign_in: bool) {
    let mut api = web::scope("/api/v1");
    if dev_sign_in {
        api = api.route("/dev/sign-in", web::post().to(storefront::dev_sign_in));
    }
    cfg.configure(seckill_common::service::health_routes)
        .service(
            api.route("/openapi.json", web::get().to(openapi::openapi_json))
                .route("/time", web::get().to(storefront::server_time))
                .route(
                    "/admin/sales/{sale_id}/live",
                    web::get().to(console::live_sale),
                )
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
