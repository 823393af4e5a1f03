//! The messages' templates: Jinja templates kept as files in `templates/` (a subject, a plain
//! text part and an HTML part per message, the two parts extending a shared layout), built into
//! the binary and replaceable file by file from a directory at start, without recompiling.
//! HTML is escaped automatically; the text parts are not.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The messages, each three files (`NAME.subject`, `NAME.txt`, `NAME.html`), and the layouts
/// their parts extend: one list, so that a message cannot lack a built-in template.
macro_rules! messages {
    ($($name:literal),* $(,)?) => {
        /// Every message the service writes.
        pub const MESSAGES: &[&str] = &[$($name),*];

        /// The built-in templates, by file name.
        const BUILTIN: &[(&str, &str)] = &[
            ("layout.html", include_str!("../templates/layout.html")),
            ("layout.txt", include_str!("../templates/layout.txt")),
            $(
                (concat!($name, ".subject"), include_str!(concat!("../templates/", $name, ".subject"))),
                (concat!($name, ".txt"), include_str!(concat!("../templates/", $name, ".txt"))),
                (concat!($name, ".html"), include_str!(concat!("../templates/", $name, ".html"))),
            )*
        ];
    };
}

messages!(
    "welcome",
    "verify_email",
    "reset_password",
    "order_placed",
    "order_paid",
    "order_payment_failed",
    "order_shipped",
    "order_delivered",
    "order_cancelled",
);

/// A message made from its templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name}")]
    Invalid {
        name: String,
        #[source]
        source: minijinja::Error,
    },
}

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name in `dir` if there is
    /// one. Every template is parsed here, so a broken one stops the start, not a send.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // A misspelt variable in an operator's template fails the message instead of writing
        // an empty string into a customer's email.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, builtin) in BUILTIN {
            let source = match dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => std::fs::read_to_string(&path)
                    .map_err(|source| TemplateError::Read { path: path.display().to_string(), source })?,
                _ => (*builtin).to_owned(),
            };
            env.add_template_owned(*name, source)
                .map_err(|source| TemplateError::Invalid { name: (*name).to_owned(), source })?;
        }
        Ok(Self { env })
    }

    /// Renders message `name` with `context`.
    pub fn render(&self, name: &str, context: &impl Serialize) -> Result<Rendered, TemplateError> {
        let part = |suffix: &str| {
            let file = format!("{name}.{suffix}");
            self.env
                .get_template(&file)
                .and_then(|t| t.render(minijinja::value::Serde(context)))
                .map_err(|source| TemplateError::Invalid { name: file, source })
        };
        let subject = part("subject")?;
        Ok(Rendered {
            // One line: a template's stray newlines must not fold the header.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: part("txt")?,
            html: part("html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order_context() -> serde_json::Value {
        json!({
            "shop": {"name": "Emporium & Sons", "url": "https://shop.example"},
            "user": {"name": "Ada <Lovelace>", "email": "ada@example.com"},
            "link": "https://shop.example/account/verify-email?token=abc",
            "expires_in_hours": 24,
            "expires_in_minutes": 30,
            "order": {
                "number": "EM-1001",
                "url": "https://shop.example/orders/1",
                "total": "€25.00",
                "payment_reference": "pay_1",
                "reason": "card_declined",
                "carrier": "DHL",
                "tracking_number": "JD0001",
                "refunded": "€25.00",
                "lines": [{"title": "Tea <Earl Grey>", "sku": "TEA-1", "quantity": 2, "unit_price": "€12.50", "line_total": "€25.00"}],
            },
        })
    }

    #[test]
    fn every_message_renders_with_its_context() {
        let templates = Templates::load(None).unwrap();
        for &name in MESSAGES {
            let rendered = templates.render(name, &order_context()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(!rendered.subject.is_empty() && !rendered.subject.contains('\n'), "{name}");
            assert!(rendered.text.contains("Emporium & Sons"), "{name}: the layout names the shop");
            assert!(rendered.html.contains("Emporium &amp; Sons"), "{name}: HTML is escaped");
            assert!(rendered.html.contains("Ada &lt;Lovelace&gt;"), "{name}");
            assert!(!rendered.html.contains("<Lovelace>"), "{name}");
        }
        let placed = templates.render("order_placed", &order_context()).unwrap();
        assert!(placed.text.contains("Tea <Earl Grey>") && placed.text.contains("€25.00"));
        assert!(placed.html.contains("Tea &lt;Earl Grey&gt;"));
        let verify = templates.render("verify_email", &order_context()).unwrap();
        assert!(verify.text.contains("https://shop.example/account/verify-email?token=abc"));
        let shipped = templates.render("order_shipped", &order_context()).unwrap();
        assert!(shipped.text.contains("JD0001") && shipped.html.contains("JD0001"));
    }

    #[test]
    fn a_directory_replaces_templates_and_a_broken_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("emporium-templates-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("welcome.subject"), "Hello from {{ shop.name }}!").unwrap();
        let templates = Templates::load(Some(&dir)).unwrap();
        assert_eq!(templates.render("welcome", &order_context()).unwrap().subject, "Hello from Emporium & Sons!");

        std::fs::write(dir.join("welcome.txt"), "{% if %}").unwrap();
        assert!(matches!(Templates::load(Some(&dir)), Err(TemplateError::Invalid { .. })));
        std::fs::write(dir.join("welcome.txt"), "{{ no_such_thing }}").unwrap();
        let strict = Templates::load(Some(&dir)).unwrap();
        assert!(strict.render("welcome", &order_context()).is_err(), "an unknown variable fails the message");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
