//! gRPC contracts between services, generated from `proto/` at build time.
//!
//! Each package becomes a module: `rpc::catalog::v1` holds the catalog's inventory service,
//! with its client (for cart and orders) and its server trait (implemented by catalog);
//! `rpc::cart::v1` the cart's service for orders; `rpc::identity::v1` identity's service for
//! notifications.

pub mod cart {
    pub mod v1 {
        tonic::include_proto!("emporium.cart.v1");
    }
}

pub mod catalog {
    pub mod v1 {
        tonic::include_proto!("emporium.catalog.v1");
    }
}

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("emporium.identity.v1");
    }
}
