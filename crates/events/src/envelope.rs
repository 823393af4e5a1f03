//! The CloudEvents 1.0 envelope in structured JSON mode.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// A payload type with its CloudEvents `type` and the entity it is about.
pub trait EventPayload: Serialize + DeserializeOwned {
    /// The CloudEvents `type`, such as `user.registered`.
    const TYPE: &'static str;
    /// The CloudEvents `subject`: the id of the entity the event is about. Consumers keep
    /// order per subject.
    fn subject(&self) -> String;
}

/// A CloudEvents 1.0 event with a JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    /// Unique per event; consumers deduplicate by it.
    pub id: Uuid,
    /// The producing service, as a URI reference (`/emporium/identity`).
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub datacontenttype: String,
    pub data: serde_json::Value,
    /// W3C trace context of the request that caused the event (Distributed Tracing extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl CloudEvent {
    /// Wraps a typed payload produced by `service`.
    pub fn new<P: EventPayload>(
        service: &str,
        payload: &P,
        traceparent: Option<String>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            specversion: "1.0".to_owned(),
            id: Uuid::now_v7(),
            source: format!("/emporium/{service}"),
            event_type: P::TYPE.to_owned(),
            time: platform::time::now(),
            subject: Some(payload.subject()),
            datacontenttype: "application/json".to_owned(),
            data: serde_json::to_value(payload)?,
            traceparent,
        })
    }

    /// The typed payload, when this event is of type `P`.
    pub fn payload<P: EventPayload>(&self) -> Option<Result<P, serde_json::Error>> {
        (self.event_type == P::TYPE).then(|| serde_json::from_value(self.data.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payloads::UserRegistered;

    #[test]
    fn serialises_as_structured_cloudevent() {
        let payload = UserRegistered {
            user_id: Uuid::now_v7(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            registered_at: platform::time::now(),
            signed_up_with: "password".into(),
            email_verified: false,
        };
        let event = CloudEvent::new(
            "identity",
            &payload,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        )
        .unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "user.registered");
        assert_eq!(json["source"], "/emporium/identity");
        assert_eq!(json["subject"], payload.user_id.to_string());
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"]["email"], "ada@example.com");
        assert!(json["traceparent"].is_string());
        let back: CloudEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back.payload::<UserRegistered>().unwrap().unwrap(), payload);
    }
}
