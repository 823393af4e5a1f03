//! List limits and opaque cursors for keyset pagination.
//!
//! A cursor is the sort key of the last item a page returned, serialised and base64url
//! encoded: opaque to clients, stable under concurrent inserts (unlike offsets), and cheap to
//! seek with an index.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{FieldError, Problem};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// `?limit=&cursor=` of a cursor-paginated collection.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<K> {
    pub limit: u32,
    /// Return items strictly after this key.
    pub after: Option<K>,
}

impl PageQuery {
    pub fn parse<K: DeserializeOwned>(&self) -> Result<PageRequest<K>, Problem> {
        let limit = parse_limit(self.limit)?;
        let after = match &self.cursor {
            None => None,
            Some(cursor) if cursor.is_empty() => None,
            Some(cursor) => Some(
                decode_cursor(cursor)
                    .ok_or_else(|| Problem::validation(vec![FieldError::new("cursor", "is not a valid cursor")]))?,
            ),
        };
        Ok(PageRequest { limit, after })
    }
}

pub fn parse_limit(limit: Option<u32>) -> Result<u32, Problem> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => {
            Err(Problem::validation(vec![FieldError::new("limit", format!("must be between 1 and {MAX_LIMIT}"))]))
        }
    }
}

/// One page of a cursor-paginated collection.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in order: the extra row, when present,
    /// only tells that another page exists.
    pub fn from_rows<K: Serialize>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> Self {
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|last| encode_cursor(&key(last)))
        } else {
            None
        };
        Self { items: rows, next_cursor }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_cursor: self.next_cursor }
    }
}

pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Option<K> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some(100)).unwrap(), 100);
        assert_eq!(parse_limit(Some(0)).unwrap_err().status, 422);
        assert_eq!(parse_limit(Some(101)).unwrap_err().status, 422);
    }

    #[test]
    fn pages_carry_a_cursor_only_when_more_rows_exist() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(page.items, vec![1, 2]);
        let next: i32 = decode_cursor(page.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(next, 2);
        assert!(Page::from_rows(vec![1, 2], 2, |n| *n).next_cursor.is_none());
    }

    #[test]
    fn garbage_cursors_are_rejected() {
        let query = PageQuery { limit: None, cursor: Some("!!".to_owned()) };
        assert_eq!(query.parse::<uuid::Uuid>().unwrap_err().status, 422);
    }
}
