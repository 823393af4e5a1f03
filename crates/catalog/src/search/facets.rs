//! Counting facet values over the documents a query matches, straight from the columnar fields:
//! per segment, an array of counters indexed by term ordinal, turned into strings only once at
//! the end.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use tantivy::{
    DocId, Score, SegmentReader,
    collector::{Collector, SegmentCollector},
    columnar::{Column, StrColumn},
};
use utoipa::ToSchema;

/// Price bucket boundaries in minor units: `[0, 1000)`, `[1000, 2500)`, …, `[100000, ∞)`.
pub const PRICE_EDGES: [i64; 8] = [0, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000];

pub fn price_bucket(price: i64) -> usize {
    PRICE_EDGES.iter().rposition(|edge| price >= *edge).unwrap_or(0)
}

/// Which attribute names to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrScope {
    None,
    /// Every name except these.
    AllExcept(Vec<String>),
    Only(String),
}

impl AttrScope {
    fn wants(&self, name: &str) -> bool {
        match self {
            Self::None => false,
            Self::AllExcept(skip) => !skip.iter().any(|s| s == name),
            Self::Only(only) => only == name,
        }
    }
}

/// What to count.
#[derive(Debug, Clone)]
pub struct FacetSpec {
    pub category: bool,
    pub brand: bool,
    pub attrs: AttrScope,
    pub price: bool,
}

impl FacetSpec {
    pub fn none() -> Self {
        Self { category: false, brand: false, attrs: AttrScope::None, price: false }
    }

    fn is_empty(&self) -> bool {
        !self.category && !self.brand && self.attrs == AttrScope::None && !self.price
    }
}

#[derive(Debug, Default, Clone)]
pub struct FacetCounts {
    pub category: HashMap<String, u64>,
    pub brand: HashMap<String, u64>,
    /// By attribute name, then value.
    pub attrs: HashMap<String, HashMap<String, u64>>,
    pub price: [u64; PRICE_EDGES.len()],
}

impl FacetCounts {
    pub fn merge(&mut self, other: FacetCounts) {
        for (value, n) in other.category {
            *self.category.entry(value).or_default() += n;
        }
        for (value, n) in other.brand {
            *self.brand.entry(value).or_default() += n;
        }
        for (name, values) in other.attrs {
            let mine = self.attrs.entry(name).or_default();
            for (value, n) in values {
                *mine.entry(value).or_default() += n;
            }
        }
        for (mine, theirs) in self.price.iter_mut().zip(other.price) {
            *mine += theirs;
        }
    }
}

/// Values listed per facet.
const MAX_FACET_VALUES: usize = 50;

#[derive(Debug, Serialize, ToSchema)]
pub struct FacetValue {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceBucket {
    /// Inclusive, in minor units.
    pub min: i64,
    /// Inclusive; absent for the open-ended top bucket.
    pub max: Option<i64>,
    pub count: u64,
}

/// Facets as answered: `{"brand": [...], "category": [...], "attr.NAME": [...], "price": [...]}`,
/// written once and shared by every answer that asks for the same counts.
#[derive(Debug, Clone)]
pub struct RenderedFacets(Arc<RawValue>);

impl Serialize for RenderedFacets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::serialize(&self.0, serializer)
    }
}

impl RenderedFacets {
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

fn values(counts: &HashMap<String, u64>) -> Vec<FacetValue> {
    let mut values: Vec<FacetValue> =
        counts.iter().map(|(value, count)| FacetValue { value: value.clone(), count: *count }).collect();
    values.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    values.truncate(MAX_FACET_VALUES);
    values
}

impl FacetCounts {
    /// The counts as the API answers them, values by count (then name), at most 50 a facet.
    pub fn render(&self) -> RenderedFacets {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Facet {
            Values(Vec<FacetValue>),
            Price(Vec<PriceBucket>),
        }
        let mut facets = BTreeMap::new();
        facets.insert("category".to_owned(), Facet::Values(values(&self.category)));
        facets.insert("brand".to_owned(), Facet::Values(values(&self.brand)));
        for (name, counts) in &self.attrs {
            facets.insert(format!("attr.{name}"), Facet::Values(values(counts)));
        }
        let buckets = self
            .price
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| PriceBucket {
                min: PRICE_EDGES[i],
                max: PRICE_EDGES.get(i + 1).map(|next| next - 1),
                count: *n,
            })
            .collect();
        facets.insert("price".to_owned(), Facet::Price(buckets));
        let json = serde_json::to_string(&facets).unwrap_or_else(|_| "{}".to_owned());
        let raw = RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned());
        RenderedFacets(Arc::from(raw))
    }
}

pub struct FacetCollector {
    pub spec: FacetSpec,
}

impl Collector for FacetCollector {
    type Fruit = FacetCounts;
    type Child = SegmentFacets;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentFacets> {
        let fast = segment.fast_fields();
        let column = |wanted: bool, name: &str| -> tantivy::Result<Option<Counted>> {
            if !wanted {
                return Ok(None);
            }
            Ok(fast.str(name)?.map(|column| Counted { counts: vec![0; column.num_terms()], column }))
        };
        Ok(SegmentFacets {
            category: column(self.spec.category, "category")?,
            brand: column(self.spec.brand, "brand")?,
            attrs: column(self.spec.attrs != AttrScope::None, "attrs")?,
            attr_scope: self.spec.attrs.clone(),
            price: if self.spec.price { Some((fast.i64("price")?, [0; PRICE_EDGES.len()])) } else { None },
            skip: self.spec.is_empty(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<FacetCounts>) -> tantivy::Result<FacetCounts> {
        let mut total = FacetCounts::default();
        for fruit in fruits {
            total.merge(fruit);
        }
        Ok(total)
    }
}

struct Counted {
    column: StrColumn,
    counts: Vec<u32>,
}

impl Counted {
    fn collect(&mut self, doc: DocId) {
        for ord in self.column.term_ords(doc) {
            self.counts[ord as usize] += 1;
        }
    }

    fn harvest(self) -> impl Iterator<Item = (String, u64)> {
        let Counted { column, counts } = self;
        let ords: Vec<u64> = (0..counts.len() as u64).filter(|ord| counts[*ord as usize] > 0).collect();
        // One pass over the dictionary for all the ordinals, in order: a lookup each would
        // search the dictionary's blocks from the start every time.
        let mut values = Vec::with_capacity(ords.len());
        let _ = column
            .dictionary()
            .sorted_ords_to_term_cb(&ords, |bytes| values.push(String::from_utf8_lossy(bytes).into_owned()));
        values.into_iter().zip(ords).map(move |(value, ord)| (value, u64::from(counts[ord as usize])))
    }
}

pub struct SegmentFacets {
    category: Option<Counted>,
    brand: Option<Counted>,
    attrs: Option<Counted>,
    attr_scope: AttrScope,
    price: Option<(Column<i64>, [u64; PRICE_EDGES.len()])>,
    skip: bool,
}

impl SegmentCollector for SegmentFacets {
    type Fruit = FacetCounts;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if self.skip {
            return;
        }
        for counted in [&mut self.category, &mut self.brand, &mut self.attrs].into_iter().flatten() {
            counted.collect(doc);
        }
        if let Some((column, buckets)) = &mut self.price
            && let Some(price) = column.first(doc)
        {
            buckets[price_bucket(price)] += 1;
        }
    }

    fn harvest(self) -> FacetCounts {
        let mut counts = FacetCounts::default();
        if let Some(category) = self.category {
            counts.category = category.harvest().collect();
        }
        if let Some(brand) = self.brand {
            counts.brand = brand.harvest().collect();
        }
        if let Some(attrs) = self.attrs {
            for (pair, n) in attrs.harvest() {
                if let Some((name, value)) = pair.split_once('=')
                    && self.attr_scope.wants(name)
                {
                    counts.attrs.entry(name.to_owned()).or_default().insert(value.to_owned(), n);
                }
            }
        }
        if let Some((_, buckets)) = self.price {
            counts.price = buckets;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_buckets() {
        assert_eq!(price_bucket(0), 0);
        assert_eq!(price_bucket(999), 0);
        assert_eq!(price_bucket(1_000), 1);
        assert_eq!(price_bucket(99_999), 6);
        assert_eq!(price_bucket(5_000_000), 7);
    }
}
