//! The API contract: the gateway serves its OpenAPI document, generated from
//! the handlers' own types, and schemathesis (PyPI), run against the real
//! stack with that document, finds no answer that breaks it and no 5xx.
//!
//! `deploy/local/test.sh` installs schemathesis and names it in
//! `SECKILL_SCHEMATHESIS_BIN`. Each run is bounded in examples and in time,
//! and sends traffic to 127.0.0.1 only.
use std::process::Command;

use seckill_tests::stack::ADMIN_TOKEN;
use seckill_tests::Stack;

/// What every answer is checked for: documented status, content type and
/// body, and never a server error.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Half the generated sale ids are the live sale's, so that reads, tokens
/// and purchases also reach Redis and the script, not only `404`.
fn config(sale: &str) -> std::path::PathBuf {
    let path = seckill_tests::process::log_dir().join("schemathesis.toml");
    let text = format!(
        "[dictionaries.live_sale]\nvalues = [\"{sale}\"]\n\n\
         [parameters]\n\"path.sale_id\" = {{ dictionary = \"live_sale\", probability = 0.5 }}\n"
    );
    std::fs::write(&path, text).expect("schemathesis config");
    path
}

fn schemathesis(
    config: &std::path::Path,
    document: &str,
    tag: &str,
    bearer: &str,
) -> (bool, String) {
    let bin = std::env::var("SECKILL_SCHEMATHESIS_BIN")
        .expect("SECKILL_SCHEMATHESIS_BIN: run the tests with deploy/local/test.sh, which installs schemathesis");
    let output = Command::new(bin)
        .arg("--config-file")
        .arg(config)
        .args([
            "run",
            document,
            "--checks",
            CHECKS,
            "--include-tag",
            tag,
            "--header",
            &format!("Authorization: Bearer {bearer}"),
            "--max-examples",
            "25",
            "--max-time",
            "45",
            "--seed",
            "20261130",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .output()
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document_and_none_is_a_5xx() {
    let stack = Stack::start().await;
    // A live sale, so that some generated purchases and reads find one.
    let sale = stack.active_sale(1_000_000).await;
    let (status, doc) = stack.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );

    let document = format!("{}/api/v1/openapi.json", stack.gateway_url);
    let user = stack.token("schemathesis");
    let runs = [("shop", user.as_str()), ("admin", ADMIN_TOKEN)];
    let config = config(&sale);
    let results = seckill_tests::blocking(|| {
        runs.map(|(tag, bearer)| (tag, schemathesis(&config, &document, tag, bearer)))
    });
    for (tag, (passed, report)) in &results {
        // Kept with the services' logs, for a look at what was tried.
        let saved = seckill_tests::process::log_dir().join(format!("schemathesis-{tag}.txt"));
        let _ = std::fs::write(&saved, report);
        assert!(
            passed,
            "schemathesis found answers that break the contract ({tag}):\n{report}"
        );
    }
    // The stack is still whole after the fuzzing.
    let (status, _) = stack.get("/readyz", None).await;
    assert_eq!(status, 200);
}
