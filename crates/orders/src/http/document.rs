//! The OpenAPI document this deployment serves: [`ApiDoc`], with what depends on the
//! configuration filled in. Checkout takes the payment methods of the configured provider, so
//! the schema of `payment_method` can only be exact once the provider is known.

use utoipa::{
    OpenApi,
    openapi::{
        self, RefOr,
        schema::{Object, Schema},
    },
};

use super::ApiDoc;
use crate::payments::Methods;

/// [`ApiDoc`] with `payment_method` narrowed to what the provider takes (`methods`).
pub fn served(methods: Methods) -> openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    if let Some(schema) = property(&mut document, "CheckoutBody", "payment_method") {
        match methods {
            Methods::Listed(names) => schema.enum_values = Some(names.iter().map(|&name| name.into()).collect()),
            Methods::Matching(pattern) => schema.pattern = Some(pattern.to_owned()),
        }
    }
    document
}

/// The schema of a property of a component, to change it.
fn property<'a>(document: &'a mut openapi::OpenApi, component: &str, name: &str) -> Option<&'a mut Object> {
    let Some(RefOr::T(Schema::Object(object))) = document.components.as_mut()?.schemas.get_mut(component) else {
        return None;
    };
    match object.properties.get_mut(name)? {
        RefOr::T(Schema::Object(property)) => Some(property),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};
    use platform::{http::Input, pagination::MAX_LIMIT};
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::{
        domain::text::{NO_CONTROLS, PRINTABLE},
        http::{CheckoutBody, CheckoutInput, ShipmentBody, ShipmentInput, idempotency_key},
    };

    const SANDBOX: Methods = Methods::Listed(&["pm_card_visa", "pm_card_mastercard"]);

    fn document(methods: Methods) -> Value {
        serde_json::to_value(served(methods)).unwrap()
    }

    /// The examples of a component's properties, as one object.
    fn example(document: &Value, component: &str) -> Map<String, Value> {
        let properties = document["components"]["schemas"][component]["properties"].as_object().unwrap();
        properties.iter().filter_map(|(name, schema)| Some((name.clone(), schema.get("example")?.clone()))).collect()
    }

    #[test]
    fn the_text_rules_are_the_ones_the_code_applies() {
        let document = document(SANDBOX);
        let schemas = &document["components"]["schemas"];
        for (component, field) in [
            ("Address", "name"),
            ("Address", "line1"),
            ("Address", "city"),
            ("Address", "postal_code"),
            ("ShipmentBody", "carrier"),
            ("ShipmentBody", "tracking_number"),
        ] {
            assert_eq!(schemas[component]["properties"][field]["pattern"], PRINTABLE, "{component}.{field}");
            assert_eq!(schemas[component]["properties"][field]["minLength"], 1, "{component}.{field}");
        }
        assert_eq!(schemas["Address"]["properties"]["line2"]["pattern"], NO_CONTROLS);
        for path in ["/api/v1/orders", "/api/v1/admin/orders"] {
            let parameters = document["paths"][path]["get"]["parameters"].as_array().unwrap();
            let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
            assert_eq!((&limit["schema"]["minimum"], &limit["schema"]["maximum"]), (&json!(1), &json!(MAX_LIMIT)));
        }
    }

    #[test]
    fn payment_methods_are_the_providers() {
        let listed = document(SANDBOX);
        let method = &listed["components"]["schemas"]["CheckoutBody"]["properties"]["payment_method"];
        assert_eq!(method["enum"], json!(["pm_card_visa", "pm_card_mastercard"]));
        let matching = document(Methods::Matching("^pm_[0-9A-Za-z_]+$"));
        let method = &matching["components"]["schemas"]["CheckoutBody"]["properties"]["payment_method"];
        assert_eq!((method["pattern"].as_str(), method.get("enum")), (Some("^pm_[0-9A-Za-z_]+$"), None));
    }

    /// The examples phase of a fuzzer sends these: the code must take them.
    #[test]
    fn the_examples_are_accepted() {
        let document = document(SANDBOX);
        let mut checkout = example(&document, "CheckoutBody");
        checkout.insert("shipping_address".to_owned(), Value::Object(example(&document, "Address")));
        let body: CheckoutBody = serde_json::from_value(Value::Object(checkout)).unwrap();
        assert!(["pm_card_visa", "pm_card_mastercard"].contains(&body.payment_method.as_str()));
        assert!(CheckoutInput::parse(body).is_ok());
        let shipment: ShipmentBody = serde_json::from_value(Value::Object(example(&document, "ShipmentBody"))).unwrap();
        assert!(ShipmentInput::parse(shipment).is_ok());

        let key = &document["paths"]["/api/v1/orders"]["post"]["parameters"][0];
        assert_eq!(key["name"], "Idempotency-Key");
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", HeaderValue::from_str(key["example"].as_str().unwrap()).unwrap());
        assert!(idempotency_key(&headers).is_ok());
    }
}
