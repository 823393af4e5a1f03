//! Certificates for tests of TLS servers, made by `openssl`.

use std::path::{Path, PathBuf};

use tokio::process::Command;

/// Makes, in `dir`, a private CA and a certificate it signed for `localhost` and `127.0.0.1`
/// (`cert.pem`, `key.pem`); the CA's file, for the client to trust.
///
/// Not one self-signed certificate: `openssl req -x509` marks it as a CA (`basicConstraints
/// CA:TRUE`), and rustls (lettre's TLS, the gateway's) refuses a CA's certificate presented as the server's own
/// (`CaUsedAsEndEntity`). A CA and a certificate it signed is also what an operator's relay has.
pub async fn certificates(dir: &Path) -> PathBuf {
    tokio::fs::write(dir.join("san.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").await.expect("san.cnf");
    // Each step as its shell command (no argument has a space).
    for step in [
        "req -x509 -newkey rsa:2048 -nodes -subj /CN=Emporium-Test-CA -days 2 -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out req.csr",
        "x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.cnf -out cert.pem",
    ] {
        let made = Command::new("openssl")
            .args(step.split_whitespace())
            .current_dir(dir)
            .output()
            .await
            .expect("openssl runs");
        assert!(made.status.success(), "openssl {step}: {}", String::from_utf8_lossy(&made.stderr));
    }
    dir.join("ca.pem")
}
