//! Turning a shopper's search into a Tantivy query, and answering it with hits, a total and
//! facet counts.
//!
//! Every word of `q` must match (in the title, brand, category or description). A word matches
//! exactly (scored by BM25, the title weighing most), with one typo if it has 5 letters or
//! more, and, for the last word, as a prefix of a longer word. Typo and prefix matches score
//! below exact ones, so exact titles come first.

use std::{collections::BTreeMap, ops::Bound};

use tantivy::{
    DocAddress, Order, Searcher, Term,
    collector::{Count, TopDocs},
    query::{
        AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, EmptyQuery, FuzzyTermQuery, Occur, PhraseQuery, Query,
        RangeQuery, TermQuery,
    },
    schema::{Field, IndexRecordOption},
};

use super::{
    facets::{AttrScope, FacetCollector, FacetCounts, FacetSpec},
    schema::{Fields, analyzer},
};

/// The orders a search can be listed in; the API's `sort` names them in snake case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Sort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
    Title,
}

impl Sort {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "relevance" => Self::Relevance,
            "price_asc" => Self::PriceAsc,
            "price_desc" => Self::PriceDesc,
            "newest" => Self::Newest,
            "title" => Self::Title,
            _ => return None,
        })
    }
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub q: Option<String>,
    /// The category asked for and every category below it.
    pub categories: Vec<String>,
    pub brands: Vec<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    /// Attribute name → accepted values (any of them).
    pub attrs: BTreeMap<String, Vec<String>>,
    pub sort: Sort,
    pub limit: usize,
    pub offset: usize,
    /// `None` for everyone (active products only); admins may ask for any status, or all.
    pub statuses: Option<Vec<String>>,
    pub facets: bool,
}

impl SearchRequest {
    pub fn new() -> Self {
        Self {
            q: None,
            categories: Vec::new(),
            brands: Vec::new(),
            min_price: None,
            max_price: None,
            in_stock: false,
            attrs: BTreeMap::new(),
            sort: Sort::Newest,
            limit: 20,
            offset: 0,
            statuses: None,
            facets: true,
        }
    }
}

impl SearchRequest {
    /// What facet counts depend on: every filter, and not the page or its order.
    pub fn facet_key(&self) -> String {
        format!(
            "{:?}",
            (
                &self.q,
                &self.categories,
                &self.brands,
                self.min_price,
                self.max_price,
                self.in_stock,
                &self.attrs,
                &self.statuses
            )
        )
    }
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Default)]
pub struct SearchHits {
    pub docs: Vec<DocAddress>,
    pub total: usize,
    pub facets: FacetCounts,
}

/// Full-text fields and their weights.
fn weighted(fields: &Fields) -> [(Field, f32); 4] {
    [(fields.title, 3.0), (fields.brand_text, 2.0), (fields.category_text, 1.5), (fields.description, 1.0)]
}
const TYPO_WEIGHT: f32 = 0.3;
const PREFIX_WEIGHT: f32 = 0.5;
const MAX_WORDS: usize = 12;

/// The words of a query, as the index analysed the documents.
pub fn words(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut words = Vec::new();
    while stream.advance() {
        words.push(stream.token().text.clone());
    }
    words.truncate(MAX_WORDS);
    words
}

/// The full-text part of a search, or `None` when `q` has no words.
pub fn text_query(fields: &Fields, text: &str, only_title: bool) -> Option<Box<dyn Query>> {
    let words = words(text);
    let last = words.len().checked_sub(1)?;
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(words.len() + 1);
    for (i, word) in words.iter().enumerate() {
        let mut alternatives: Vec<Box<dyn Query>> = Vec::new();
        for (field, boost) in weighted(fields) {
            if only_title && field != fields.title {
                continue;
            }
            let term = Term::from_field_text(field, word);
            alternatives.push(Box::new(BoostQuery::new(
                Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                boost,
            )));
            if word.chars().count() >= 5 {
                let typo = FuzzyTermQuery::new(term.clone(), 1, true);
                alternatives.push(Box::new(BoostQuery::new(Box::new(typo), boost * TYPO_WEIGHT)));
            }
            if i == last {
                let prefix = FuzzyTermQuery::new_prefix(term, 0, true);
                alternatives.push(Box::new(BoostQuery::new(Box::new(prefix), boost * PREFIX_WEIGHT)));
            }
        }
        clauses.push((Occur::Must, Box::new(BooleanQuery::union(alternatives))));
    }
    if words.len() > 1 {
        // The words together in the title, in order: what "exact title first" rests on.
        let terms = words.iter().map(|w| Term::from_field_text(fields.title, w)).collect();
        clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(PhraseQuery::new(terms)), 4.0))));
    }
    Some(Box::new(BooleanQuery::new(clauses)))
}

/// A filter that does not change scores.
fn filter(query: Box<dyn Query>) -> (Occur, Box<dyn Query>) {
    (Occur::Must, Box::new(ConstScoreQuery::new(query, 0.0)))
}

fn any_of(field: Field, values: &[String]) -> Box<dyn Query> {
    let terms: Vec<Box<dyn Query>> = values
        .iter()
        .map(|v| Box::new(TermQuery::new(Term::from_field_text(field, v), IndexRecordOption::Basic)) as Box<dyn Query>)
        .collect();
    Box::new(BooleanQuery::union(terms))
}

/// Which facet's own filter to leave out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Without {
    Nothing,
    Category,
    Brand,
    Price,
    Attr(String),
}

fn build(fields: &Fields, request: &SearchRequest, without: &Without) -> Box<dyn Query> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if let Some(text) = request.q.as_deref().and_then(|q| text_query(fields, q, false)) {
        clauses.push((Occur::Must, text));
    }
    match &request.statuses {
        None => clauses.push(filter(any_of(fields.status, &["active".to_owned()]))),
        Some(statuses) if !statuses.is_empty() => clauses.push(filter(any_of(fields.status, statuses))),
        Some(_) => {}
    }
    if !request.categories.is_empty() && *without != Without::Category {
        clauses.push(filter(any_of(fields.category, &request.categories)));
    }
    if !request.brands.is_empty() && *without != Without::Brand {
        clauses.push(filter(any_of(fields.brand, &request.brands)));
    }
    if (request.min_price.is_some() || request.max_price.is_some()) && *without != Without::Price {
        let bound =
            |v: Option<i64>| v.map_or(Bound::Unbounded, |v| Bound::Included(Term::from_field_i64(fields.price, v)));
        let range: Box<dyn Query> = match (request.min_price, request.max_price) {
            // An empty range, not an error: each bound is valid on its own, and the API document
            // can only state them one by one.
            (Some(min), Some(max)) if min > max => Box::new(EmptyQuery),
            (min, max) => Box::new(RangeQuery::new(bound(min), bound(max))),
        };
        clauses.push(filter(range));
    }
    if request.in_stock {
        let lower = Bound::Included(Term::from_field_i64(fields.available, 1));
        clauses.push(filter(Box::new(RangeQuery::new(lower, Bound::Unbounded))));
    }
    for (name, values) in &request.attrs {
        if *without == Without::Attr(name.clone()) {
            continue;
        }
        let pairs: Vec<String> = values.iter().map(|v| format!("{name}={v}")).collect();
        clauses.push(filter(any_of(fields.attrs, &pairs)));
    }
    if clauses.is_empty() {
        return Box::new(AllQuery);
    }
    if !clauses.iter().any(|(occur, _)| *occur == Occur::Must) {
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    Box::new(BooleanQuery::new(clauses))
}

/// Runs a search: the page of hits, the total, and (when `count_facets`) facet counts where each
/// facet is counted with every filter but its own.
pub fn run(
    searcher: &Searcher,
    fields: &Fields,
    request: &SearchRequest,
    count_facets: bool,
) -> tantivy::Result<SearchHits> {
    let query = build(fields, request, &Without::Nothing);
    let has_price = request.min_price.is_some() || request.max_price.is_some();
    let main_spec = if count_facets {
        FacetSpec {
            category: request.categories.is_empty(),
            brand: request.brands.is_empty(),
            attrs: AttrScope::AllExcept(request.attrs.keys().cloned().collect()),
            price: !has_price,
        }
    } else {
        FacetSpec::none()
    };
    let top = TopDocs::with_limit(request.limit.max(1)).and_offset(request.offset);
    let facets = FacetCollector { spec: main_spec };
    let (docs, total, mut counts) = match request.sort {
        Sort::Relevance => {
            let (hits, total, counts) = searcher.search(&query, &(top.order_by_score(), Count, facets))?;
            (hits.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), total, counts)
        }
        Sort::PriceAsc | Sort::PriceDesc | Sort::Newest => {
            let (field, order) = match request.sort {
                Sort::PriceAsc => ("price", Order::Asc),
                Sort::PriceDesc => ("price", Order::Desc),
                _ => ("created", Order::Desc),
            };
            let collector = top.order_by_fast_field::<i64>(field, order);
            let (hits, total, counts) = searcher.search(&query, &(collector, Count, facets))?;
            (hits.into_iter().map(|(_, d)| d).collect(), total, counts)
        }
        Sort::Title => {
            let collector = top.order_by_string_fast_field("title_sort", Order::Asc);
            let (hits, total, counts) = searcher.search(&query, &(collector, Count, facets))?;
            (hits.into_iter().map(|(_, d)| d).collect(), total, counts)
        }
    };
    if count_facets {
        let mut own = Vec::new();
        if !request.categories.is_empty() {
            own.push((Without::Category, FacetSpec { category: true, ..FacetSpec::none() }));
        }
        if !request.brands.is_empty() {
            own.push((Without::Brand, FacetSpec { brand: true, ..FacetSpec::none() }));
        }
        if has_price {
            own.push((Without::Price, FacetSpec { price: true, ..FacetSpec::none() }));
        }
        for name in request.attrs.keys() {
            own.push((
                Without::Attr(name.clone()),
                FacetSpec { attrs: AttrScope::Only(name.clone()), ..FacetSpec::none() },
            ));
        }
        for (without, spec) in own {
            let query = build(fields, request, &without);
            counts.merge(searcher.search(&query, &FacetCollector { spec })?);
        }
    }
    Ok(SearchHits { docs, total, facets: counts })
}
