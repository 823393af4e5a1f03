//! The shop end to end: the real binary's services on port 0, talking HTTP to each other, on
//! real SQLite and PostgreSQL databases, driven the way a client application drives them.

mod broken_authentication;
mod broken_function_level_authorization;
mod broken_object_level_authorization;
mod broken_object_property_level_authorization;
mod cart;
mod catalog;
mod chaos;
mod common;
mod contract;
mod distributed;
mod events;
mod identity;
mod improper_inventory;
mod inventory;
mod limits;
mod links;
mod notifications;
mod observability;
mod orders;
mod recovery;
mod search;
mod secrets_at_rest;
mod security_misconfiguration;
mod sensitive_business_flows;
mod server_side_request_forgery;
mod shutdown;
mod slow_clients;
mod social;
mod storefront;
mod stripe;
mod unrestricted_resource_consumption;
mod unsafe_consumption;
