//! Reading `GET /products` query strings (with repeated keys and `attr.NAME=VALUE`) into a
//! [`SearchRequest`].
//!
//! Every rule here is one the operation's parameters state (`minimum`, `maximum`, `maxLength`,
//! enums), so none depends on two parameters at once: a request the document calls valid is
//! never refused.

use std::collections::{HashMap, HashSet};

use platform::{ErrorCode, Problem};
use utoipa::ToSchema;

use crate::{
    domain,
    search::{SearchRequest, Sort},
};

pub const MAX_LIMIT: usize = 100;
/// No page starts deeper: nobody reads that far, and deep pages cost the most. The bound is on
/// `offset` alone, whatever the page's size, so that it is one a schema states (a bound on
/// `offset + limit` would tie two parameters together); a search ranks at most 10,100 results.
pub const MAX_OFFSET: usize = 10_000;
pub const MAX_Q: usize = 200;
/// Values one filter may list (`brand=…&brand=…`, `attr.color=…`): more is no shopper's query,
/// and each is a clause in the search.
pub const MAX_VALUES: usize = 50;
/// Distinct `attr.NAME` filters in one query.
pub const MAX_ATTRIBUTES: usize = 20;

/// `status`: which products an admin lists. Checked for everyone, applied for admins only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum StatusFilter {
    Draft,
    Active,
    Archived,
    All,
}

impl StatusFilter {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "draft" => Self::Draft,
            "active" => Self::Active,
            "archived" => Self::Archived,
            "all" => Self::All,
            _ => return None,
        })
    }

    /// The statuses listed; empty for all of them.
    fn statuses(self) -> Vec<String> {
        match self {
            Self::Draft => vec!["draft".to_owned()],
            Self::Active => vec!["active".to_owned()],
            Self::Archived => vec!["archived".to_owned()],
            Self::All => Vec::new(),
        }
    }
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::with_detail(ErrorCode::BadRequest, detail)
}

/// What the query string asks for. `category` is returned apart: the handler expands it to the
/// category and its descendants.
pub fn parse(query: Option<&str>, admin: bool) -> Result<(SearchRequest, Option<String>), Problem> {
    let mut request = SearchRequest::new();
    let mut sort = None;
    let mut category = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "q" => {
                if value.chars().count() > MAX_Q {
                    return Err(bad(format!("q must be at most {MAX_Q} characters")));
                }
                request.q = Some(value).filter(|q| !q.trim().is_empty());
            }
            "category" => category = Some(value),
            "brand" => {
                if request.brands.len() == MAX_VALUES {
                    return Err(bad(format!("brand may be given at most {MAX_VALUES} times")));
                }
                request.brands.push(value)
            }
            "min_price" => request.min_price = Some(value.parse().map_err(|_| bad("min_price must be an integer"))?),
            "max_price" => request.max_price = Some(value.parse().map_err(|_| bad("max_price must be an integer"))?),
            "in_stock" => {
                request.in_stock = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("in_stock must be true or false")),
                }
            }
            "sort" => {
                sort = Some(
                    Sort::parse(&value)
                        .ok_or_else(|| bad("sort must be one of relevance, price_asc, price_desc, newest, title"))?,
                )
            }
            "limit" => {
                request.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| bad(format!("limit must be an integer from 1 to {MAX_LIMIT}")))?
            }
            "offset" => {
                request.offset = value
                    .parse()
                    .ok()
                    .filter(|o| *o <= MAX_OFFSET)
                    .ok_or_else(|| bad(format!("offset must be an integer from 0 to {MAX_OFFSET}")))?
            }
            "status" => {
                let status =
                    StatusFilter::parse(&value).ok_or_else(|| bad("status must be draft, active, archived or all"))?;
                if admin {
                    request.statuses = Some(status.statuses());
                }
            }
            name => {
                if let Some(attribute) = name.strip_prefix("attr.") {
                    domain::attribute_name(attribute).map_err(|e| bad(format!("attr.{attribute}: {e}")))?;
                    if !request.attrs.contains_key(attribute) && request.attrs.len() == MAX_ATTRIBUTES {
                        return Err(bad(format!("at most {MAX_ATTRIBUTES} attr.NAME filters")));
                    }
                    let values = request.attrs.entry(attribute.to_owned()).or_default();
                    if values.len() == MAX_VALUES {
                        return Err(bad(format!("attr.{attribute} may be given at most {MAX_VALUES} times")));
                    }
                    values.push(value);
                }
                // Anything else (a cache buster, a tracking parameter) is ignored.
            }
        }
    }
    if admin && request.statuses.is_none() {
        // Admins see every product unless they ask for a status.
        request.statuses = Some(Vec::new());
    }
    request.sort = sort.unwrap_or(if request.q.is_some() { Sort::Relevance } else { Sort::Newest });
    Ok((request, category))
}

/// The category and every category below it.
pub fn descendants(root: &str, parents: &HashMap<String, Option<String>>) -> Vec<String> {
    let mut found: HashSet<&str> = HashSet::from([root]);
    // Repeated passes until nothing new: the tree is small and shallow.
    loop {
        let before = found.len();
        for (slug, parent) in parents {
            if parent.as_deref().is_some_and(|p| found.contains(p)) {
                found.insert(slug);
            }
        }
        if found.len() == before {
            break;
        }
    }
    let mut list: Vec<String> = found.into_iter().map(str::to_owned).collect();
    list.sort();
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let (request, category) =
            parse(Some("q=trail+shoe&brand=Hoka&brand=Asics&attr.color=red&attr.color=blue&in_stock=true&category=shoes&limit=5"), false)
                .unwrap();
        assert_eq!(request.q.as_deref(), Some("trail shoe"));
        assert_eq!(request.brands, ["Hoka", "Asics"]);
        assert_eq!(request.attrs["color"], ["red", "blue"]);
        assert!(request.in_stock);
        assert_eq!(category.as_deref(), Some("shoes"));
        assert_eq!(request.sort, Sort::Relevance);
        assert_eq!(request.limit, 5);
        assert_eq!(request.statuses, None);
        assert_eq!(parse(None, false).unwrap().0.sort, Sort::Newest);
        assert_eq!(parse(Some("status=draft"), true).unwrap().0.statuses, Some(vec!["draft".to_owned()]));
        assert_eq!(parse(Some("status=draft"), false).unwrap().0.statuses, None);
    }

    #[test]
    fn bad_query_strings() {
        for bad in [
            "limit=0",
            "limit=101",
            "min_price=x",
            "in_stock=yes",
            "sort=cheap",
            "offset=-1",
            "attr.Color=x",
            "attr.=x",
            "offset=10001",
            "status=gone",
        ] {
            assert_eq!(parse(Some(bad), false).unwrap_err().status, 400, "{bad}");
        }
    }

    /// What the document allows is taken, whatever else the query holds.
    #[test]
    fn schema_valid_query_strings() {
        let (request, _) = parse(Some("min_price=10&max_price=5"), false).unwrap();
        assert_eq!((request.min_price, request.max_price), (Some(10), Some(5)), "an empty range, not an error");
        assert_eq!(parse(Some("offset=10000&limit=100"), false).unwrap().0.offset, MAX_OFFSET);
        assert_eq!(parse(Some("offset=9990&limit=20"), false).unwrap().0.limit, 20);
        assert_eq!(parse(Some("status=draft"), false).unwrap().0.statuses, None, "ignored for shoppers");
        assert_eq!(parse(Some("status=all"), true).unwrap().0.statuses, Some(Vec::new()));
        assert_eq!(parse(Some(&format!("q={}", "é".repeat(MAX_Q))), false).unwrap().0.q.map(|q| q.len()), Some(400));
        assert!(parse(Some(&format!("q={}", "é".repeat(MAX_Q + 1))), false).is_err());
        assert!(parse(Some("attr.size_eu=42&utm_source=mail&_=1"), false).is_ok(), "unknown keys are ignored");
        let repeated = |key: &str, n: usize| (0..n).map(|i| format!("{key}=v{i}")).collect::<Vec<_>>().join("&");
        assert!(parse(Some(&repeated("brand", MAX_VALUES)), false).is_ok());
        assert!(parse(Some(&repeated("brand", MAX_VALUES + 1)), false).is_err());
        assert!(parse(Some(&repeated("attr.color", MAX_VALUES + 1)), false).is_err());
        let names = |n: usize| (0..n).map(|i| format!("attr.a{i}=v")).collect::<Vec<_>>().join("&");
        assert!(parse(Some(&names(MAX_ATTRIBUTES)), false).is_ok());
        assert!(
            parse(Some(&format!("{}&attr.a0=w", names(MAX_ATTRIBUTES))), false).is_ok(),
            "a name again is no new one"
        );
        assert!(parse(Some(&names(MAX_ATTRIBUTES + 1)), false).is_err());
        for sort in ["relevance", "price_asc", "price_desc", "newest", "title"] {
            assert!(parse(Some(&format!("sort={sort}")), false).is_ok(), "{sort}");
        }
    }

    #[test]
    fn categories_expand_to_descendants() {
        let parents: HashMap<String, Option<String>> = [
            ("shoes".to_owned(), None),
            ("running".to_owned(), Some("shoes".to_owned())),
            ("trail".to_owned(), Some("running".to_owned())),
            ("bags".to_owned(), None),
        ]
        .into();
        assert_eq!(descendants("shoes", &parents), ["running", "shoes", "trail"]);
        assert_eq!(descendants("bags", &parents), ["bags"]);
    }
}
