//! The OpenAPI document is the contract: a fuzzer (schemathesis, from PyPI, every check, the
//! examples, coverage, fuzzing and stateful phases) finds no answer it does not describe, no
//! request it calls valid that the shop refuses, and none it calls invalid that the shop takes.
//! `.ci/run` installs schemathesis into a virtual environment under `$HOME/.cache/emporium` and
//! names it in `EMPORIUM_TEST_SCHEMATHESIS`.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use testkit::TestDatabase;

use crate::common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestShop};

const CONFIG: &str = include_str!("contract/schemathesis.toml");

fn schemathesis() -> PathBuf {
    std::env::var_os("EMPORIUM_TEST_SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/emporium/schemathesis-venv/bin/schemathesis")
    })
}

/// Every link the document serves: where it is (method, path, status, name), and the
/// `operationRef` it names.
fn served_links(document: &Value) -> Vec<(String, String)> {
    let mut links = Vec::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = link["operationRef"].as_str().unwrap_or_default().to_owned();
                    links.push((format!("{method} {path} {status} {name}"), target));
                }
            }
        }
    }
    links
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fuzzer_finds_nothing_the_document_does_not_say() {
    let schemathesis = schemathesis();
    let installed = testkit::runs(&schemathesis, &["--version"]).await;
    if !installed {
        testkit::skip_or_fail(&format!("schemathesis is not installed at {}", schemathesis.display()));
        return;
    }
    // The shop a newcomer starts: SQLite, the demo catalog (the documented examples name its
    // SKUs), and the bootstrap administrator the fuzzer signs in as.
    let shop = TestShop::start_with(TestDatabase::sqlite(), |settings| {
        settings.catalog.demo_catalog = Some(true);
        // Every request comes from one address, and thousands carry wrong passwords or codes:
        // the throttles' own tests hold them to their real limits.
        settings.identity.login_throttle.max_failures_per_address = 1_000_000;
        settings.identity.links.max_per_address = 1_000_000;
    })
    .await;
    let document = shop.gateway.get("/api/v1/openapi.json").send().await.json();
    assert!(document["paths"].as_object().is_some_and(|paths| paths.len() > 30), "the whole document is served");
    let links = served_links(&document);
    let dangling: Vec<_> = links
        .iter()
        .filter(|(_, target)| !(target.starts_with("#/") && document.pointer(&target[1..]).is_some()))
        .collect();
    assert_eq!(dangling, Vec::<&(String, String)>::new(), "every link names an operation of the document");
    // A link whose source or target is missing is left out of the document: none may be.
    let served = links.len();
    assert_eq!(served, gateway::openapi::link_count(), "every declared link is served");

    let dir = testkit::temp_dir("schemathesis");
    let config = dir.join("schemathesis.toml");
    let login = format!(
        "\n[auth.dynamic.openapi.bearer]\npath = \"/api/v1/auth/login\"\npayload = {{ email = \"{ADMIN_EMAIL}\", password = \"{ADMIN_PASSWORD}\" }}\nextract_selector = \"/access_token\"\n"
    );
    std::fs::write(&config, format!("{CONFIG}{login}")).expect("config written");
    let base = shop.gateway.base().to_owned();
    // Fixed, and one worker, so that CI repeats itself as far as a live shop lets it; another
    // seed explores other requests. The timeout is for a CI machine busy with other tests.
    let seed = std::env::var("EMPORIUM_TEST_FUZZ_SEED").unwrap_or_else(|_| "1".to_owned());
    let run = tokio::process::Command::new(&schemathesis)
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .args(["--config-file"])
        .arg(&config)
        .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", &base])
        // Every check runs (schemathesis's default); `--checks all` would also override the few
        // the configuration turns off for one operation, with its reason.
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--workers", "1", "--seed", &seed, "--request-timeout", "30"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis ends within ten minutes")
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}\n{}", String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "schemathesis found failures (its report is above)");
    assert!(report.contains("Stateful"), "the stateful phase ran");
}
