//! The event backbone against real buses: the embedded one over SQLite, and RabbitMQ with
//! PostgreSQL outboxes. Each test has its own database and its own broker namespace.

mod common;
mod rabbitmq;
mod semantics;
