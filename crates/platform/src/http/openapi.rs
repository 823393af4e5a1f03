//! OpenAPI pieces every service's document shares.

use super::problem::PROBLEM_JSON;
use utoipa::{
    Modify,
    openapi::{
        ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
        path::{Operation, ParameterIn},
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

/// Every operation of `openapi`, mutably.
pub fn operations_mut(openapi: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
}

/// Declares `status` answered with a problem document, beside whatever else the operation
/// already says of it (a page's HTML).
pub fn declare_problem(operation: &mut Operation, status: u16, description: &str) {
    let problem = || ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let response = operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    // A page that declares its own (HTML) answer for a status may still get the gateway's.
    if let RefOr::T(response) = response {
        response.content.entry(PROBLEM_JSON.to_owned()).or_insert_with(problem);
    }
}

/// The statuses an operation answers because of how its handler reads the request, whatever the
/// handler does: the shared extractors' rejections ([`super::extract`]) and the bearer check. An
/// operation declares only what its own handler adds.
pub struct Rejections;

impl Modify for Rejections {
    fn modify(&self, openapi: &mut OpenApi) {
        for operation in operations_mut(openapi) {
            let parameters = operation.parameters.as_deref().unwrap_or_default();
            let has_query = parameters.iter().any(|p| matches!(p.parameter_in, ParameterIn::Query));
            let has_path = parameters.iter().any(|p| matches!(p.parameter_in, ParameterIn::Path));
            let has_body = operation.request_body.is_some();
            let takes_token = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            if has_body {
                declare_problem(operation, 400, "The body is not JSON, or a member has the wrong type");
                declare_problem(operation, 413, "The body exceeds the size limit");
                declare_problem(operation, 415, "The body is not `application/json`");
                declare_problem(operation, 422, "A member is missing or invalid; `errors` names each");
            }
            if has_query {
                declare_problem(operation, 400, "A query parameter has the wrong type");
            }
            if has_path {
                declare_problem(operation, 404, "Nothing has that id");
            }
            if takes_token {
                declare_problem(operation, 401, "The bearer token is missing (where required), invalid or expired");
            }
        }
    }
}
