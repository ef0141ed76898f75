//! The HTTP ceiling: the least an actix-web service can do per request (one
//! route, a fixed 202 JSON answer), so the gateway's figures can be read as a
//! fraction of what HTTP alone costs on this machine.
use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;

const BODY: &str = r#"{"order_id":"x","status":"queued"}"#;

#[derive(Parser)]
#[command(about = "Minimal actix-web server: every request gets 202 and a small JSON body")]
struct Cli {
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Worker threads; match the gateway's for a fair ceiling.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// Reads the body, as any real handler does: actix-web closes a keep-alive
/// connection whose request body was left unread, and the ceiling would then
/// measure TCP handshakes instead of requests.
async fn accepted(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Accepted()
        .content_type("application/json")
        .body(BODY)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    HttpServer::new(|| App::new().default_service(web::to(accepted)))
        .workers(cli.workers.max(1))
        .bind(("127.0.0.1", cli.port))?
        .run()
        .await
}
