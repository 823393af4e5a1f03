//! OpenAPI pieces every service's document shares.

use utoipa::{
    Modify,
    openapi::{
        OpenApi,
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

/// The name under which operations refer to the bearer access token.
pub const BEARER: &str = "bearer";

/// Declares the `bearer` security scheme (a JWT access token).
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some("An access token from /api/v1/auth/login, register or refresh".to_owned());
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}
