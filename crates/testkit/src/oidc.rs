//! A real, certified OpenID Connect provider for tests: panva's `oidc-provider` (npm), started
//! on a free loopback port with the clients a test names (`oidc/provider.mjs`). `.ci/run`
//! installs it under `$HOME/.cache/emporium/oidc-provider`; `EMPORIUM_TEST_OIDC_PROVIDER`
//! names another directory holding its `node_modules`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::browser::{Browser, absolute};

const SCRIPT: &str = include_str!("../oidc/provider.mjs");

/// A running provider; it stops when dropped.
pub struct OidcProvider {
    issuer: String,
    _child: Child,
}

/// What the person does at the provider.
#[derive(Debug, Clone, Copy)]
pub enum Consent<'a> {
    /// Signs in as this account (one of those it was started with) and consents.
    SignInAs(&'a str),
    /// Declines: the provider answers `access_denied`.
    Decline,
}

fn module_dir() -> PathBuf {
    std::env::var_os("EMPORIUM_TEST_OIDC_PROVIDER").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/emporium/oidc-provider")
    })
}

/// Starts node with the provider on a fresh port: its issuer and process, or whether it ended
/// (rather than kept silent) and what it said on stderr.
async fn launch(module: &std::path::Path, clients: &Value, accounts: &Value) -> Result<(String, Child), String> {
    let port = crate::free_port();
    // The script travels inside the test binary: a path to it could name a checkout that
    // is gone (builds share their artifacts between checkouts).
    let mut child = Command::new("node")
        .args(["--input-type=module", "--eval", SCRIPT])
        .env("OIDC_PORT", port.to_string())
        .env("OIDC_PROVIDER_MODULE", module)
        .env("OIDC_CLIENTS", clients.to_string())
        .env("OIDC_ACCOUNTS", accounts.to_string())
        .env("NODE_ENV", "test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    // What it says on stderr (warnings, or why it would not start), for a failure to show.
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let collected = said.clone();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut said = collected.lock().expect("stderr");
            said.push_str(&line);
            said.push('\n');
        }
    });
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    let Ok(Ok(Some(first))) = first else {
        if first.is_err() {
            // Silent for 30 s where it takes one: stuck (once in a CI run of hundreds). It is
            // stopped, and started again like one that ended.
            let _ = child.kill().await;
        }
        // All it said before it ended.
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        let said = said.lock().expect("stderr").clone();
        let silent = if first.is_err() { " (nothing on stdout for 30 s)" } else { "" };
        return Err(format!("port {port}{silent}: {said}"));
    };
    let issuer =
        serde_json::from_str::<Value>(&first).expect("a JSON line")["issuer"].as_str().expect("the issuer").to_owned();
    // It writes notices later; a closed pipe would end it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((issuer, child))
}

impl OidcProvider {
    /// Starts a provider with these clients (`[{client_id, client_secret, redirect_uris}]`)
    /// and accounts (`{login: {email, email_verified}}`); `None` (the test skips, or fails
    /// when backends are required) when it is not installed.
    pub async fn start(clients: Value, accounts: Value) -> Option<Self> {
        let module = module_dir().join("node_modules/oidc-provider/lib/index.js");
        if !module.exists() {
            crate::skip_or_fail(&format!("oidc-provider is not installed ({} is missing)", module.display()));
            return None;
        }
        // The port is free when chosen but may be taken before node binds it (tests run side by
        // side): a provider that ends, or stays silent, before it says it listens is started
        // again on another.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match launch(&module, &clients, &accounts).await {
                Ok((issuer, child)) => return Some(Self { issuer, _child: child }),
                Err(said) if attempts < 3 => eprintln!("oidc-provider did not start, starting again: {said}"),
                Err(said) => panic!("oidc-provider did not start: {said}"),
            }
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Walks the provider's pages from an authorization URL as a person would, and returns the
    /// URL the provider finally sends the browser to (the client's callback).
    pub async fn walk(&self, browser: &Browser, authorization_url: &str, consent: Consent<'_>) -> String {
        let mut url = authorization_url.to_owned();
        for _ in 0..20 {
            let response = browser.get(&url).await;
            if response.status.is_redirection() {
                let location = absolute(&url, response.header("location").expect("a Location"));
                if !location.starts_with(&self.issuer) {
                    return location;
                }
                url = location;
                continue;
            }
            let page = String::from_utf8_lossy(&response.body).into_owned();
            assert!(
                response.status.is_success() && url.contains("/interaction/"),
                "unexpected provider page {url} ({}): {page}",
                response.status
            );
            let uid =
                url.rsplit('/').next().expect("an interaction id").split('?').next().unwrap_or_default().to_owned();
            let answer = match consent {
                Consent::Decline => browser.get(&format!("{}/interaction/{uid}/abort", self.issuer)).await,
                Consent::SignInAs(account) if page.contains("value=\"login\"") => {
                    browser.post_form(&url, &[("prompt", "login"), ("login", account), ("password", "any")]).await
                }
                Consent::SignInAs(_) => browser.post_form(&url, &[("prompt", "consent")]).await,
            };
            assert!(answer.status.is_redirection(), "the interaction answered {}", answer.status);
            let location = absolute(&url, answer.header("location").expect("a Location"));
            if !location.starts_with(&self.issuer) {
                return location;
            }
            url = location;
        }
        panic!("the provider kept the browser for more than 20 pages");
    }
}
