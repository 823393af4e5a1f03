//! Handing messages over: to an SMTP server (lettre, with STARTTLS or TLS from the first byte,
//! and authentication), or, with none configured, to the mailbox directory as `.eml` files, so
//! that a newcomer's shop writes its emails where they can be opened.

use std::{path::PathBuf, time::Duration};

use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use secrecy::ExposeSecret;

use crate::{config::SmtpConfig, templates::Rendered};

/// Why a message was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: the server is down, busy, or refused for now (4xx), or cannot
    /// be authenticated to (its configuration may be fixed meanwhile).
    #[error("{0}")]
    Transient(String),
    /// The server refused this message for good (5xx): trying again changes nothing.
    #[error("{0}")]
    Permanent(String),
}

#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Mailbox { dir: PathBuf, transport: AsyncFileTransport<Tokio1Executor> },
}

/// The pieces of `smtp[s]://host[:port][?tls=none]`.
fn parse_url(url: &str) -> Result<(bool, String, Option<u16>, bool), String> {
    let (implicit, rest) = if let Some(rest) = url.strip_prefix("smtps://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("smtp://") {
        (false, rest)
    } else {
        return Err("notifications.smtp.url must start with smtp:// or smtps://".to_owned());
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    if authority.contains('@') {
        return Err("notifications.smtp.url must not carry credentials; set smtp.username and smtp.password".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            (host, Some(port.parse::<u16>().map_err(|_| "notifications.smtp.url has an invalid port".to_owned())?))
        }
        None => (authority, None),
    };
    if host.is_empty() {
        return Err("notifications.smtp.url names no host".to_owned());
    }
    let plain = query.split('&').any(|pair| pair == "tls=none");
    if plain && implicit {
        return Err("notifications.smtp.url: smtps:// is TLS; tls=none contradicts it".to_owned());
    }
    Ok((implicit, host.to_owned(), port, plain))
}

impl Mailer {
    /// The SMTP transport `config` describes, or the mailbox in `mailbox_dir`.
    pub fn new(config: &SmtpConfig, mailbox_dir: PathBuf) -> Result<Self, String> {
        let Some(url) = &config.url else {
            std::fs::create_dir_all(&mailbox_dir)
                .map_err(|e| format!("cannot create the mailbox {}: {e}", mailbox_dir.display()))?;
            let transport = AsyncFileTransport::new(&mailbox_dir);
            return Ok(Self::Mailbox { dir: mailbox_dir, transport });
        };
        let (implicit, host, port, plain) = parse_url(url)?;
        let tls = if plain {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(host.clone());
            if let Some(ca_file) = &config.ca_file {
                let pem = std::fs::read(ca_file)
                    .map_err(|e| format!("cannot read notifications.smtp.ca_file {}: {e}", ca_file.display()))?;
                let certificate = Certificate::from_pem(&pem)
                    .map_err(|e| format!("notifications.smtp.ca_file is not a PEM certificate: {e}"))?;
                params = params.add_root_certificate(certificate);
            }
            let params = params.build_rustls().map_err(|e| format!("TLS for {host}: {e}"))?;
            if implicit { Tls::Wrapper(params) } else { Tls::Required(params) }
        };
        let default_port = if implicit {
            465
        } else if plain {
            25
        } else {
            587
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port.unwrap_or(default_port))
            .tls(tls)
            .timeout(Some(config.timeout));
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(username.clone(), password.expose_secret().to_owned()));
        }
        Ok(Self::Smtp(builder.build()))
    }

    /// Where a message went, for the log.
    pub fn describe(&self) -> String {
        match self {
            Self::Smtp(_) => "the SMTP server".to_owned(),
            Self::Mailbox { dir, .. } => format!("the mailbox {}", dir.display()),
        }
    }

    /// Hands `message` over within `timeout`; returns where it went (the file, for the mailbox).
    pub async fn send(&self, message: Message, timeout: Duration) -> Result<Option<PathBuf>, SendError> {
        match self {
            Self::Smtp(transport) => match tokio::time::timeout(timeout, transport.send(message)).await {
                Err(_) => Err(SendError::Transient("the SMTP server did not answer in time".to_owned())),
                Ok(Ok(_)) => Ok(None),
                Ok(Err(error)) => Err(classify(&error)),
            },
            Self::Mailbox { dir, transport } => {
                let id = transport.send(message).await.map_err(|e| SendError::Transient(e.to_string()))?;
                Ok(Some(dir.join(format!("{id}.eml"))))
            }
        }
    }
}

/// A 5xx answer is permanent, except those about authentication (530, 534, 535, 538): they say
/// the configuration is wrong, not the message, and it may be fixed.
fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let text = error.to_string();
    match error.status() {
        Some(code) if error.is_permanent() => {
            let code = code.to_string();
            if ["530", "534", "535", "538"].contains(&code.as_str()) {
                SendError::Transient(text)
            } else {
                SendError::Permanent(text)
            }
        }
        _ => SendError::Transient(text),
    }
}

/// A multipart message (plain text and HTML) from `from` to `to`.
pub fn compose(from: &Mailbox, to: Mailbox, rendered: Rendered, message_id: String) -> Result<Message, String> {
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(rendered.subject)
        .message_id(Some(message_id))
        .multipart(MultiPart::alternative_plain_html(rendered.text, rendered.html))
        .map_err(|e| e.to_string())
}

/// The address as a mailbox, with the user's name.
pub fn mailbox(name: &str, email: &str) -> Result<Mailbox, String> {
    let address = email.parse().map_err(|e| format!("{email:?} is not an address: {e}"))?;
    Ok(Mailbox::new((!name.is_empty()).then(|| name.to_owned()), address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        assert_eq!(parse_url("smtp://mail.example.com").unwrap(), (false, "mail.example.com".into(), None, false));
        assert_eq!(
            parse_url("smtps://mail.example.com:2465").unwrap(),
            (true, "mail.example.com".into(), Some(2465), false)
        );
        assert_eq!(parse_url("smtp://127.0.0.1:25?tls=none").unwrap(), (false, "127.0.0.1".into(), Some(25), true));
        assert!(parse_url("smtp://user:secret@mail.example.com").is_err());
        assert!(parse_url("smtps://x?tls=none").is_err());
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("smtp://x:port").is_err());
    }
}
