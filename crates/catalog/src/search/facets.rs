//! Counting facet values over the documents a query matches, straight from the columnar fields:
//! per segment, an array of counters indexed by term ordinal, turned into strings only once at
//! the end.

use std::collections::HashMap;

use tantivy::{
    DocId, Score, SegmentReader,
    collector::{Collector, SegmentCollector},
    columnar::{Column, StrColumn},
};

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
        counts.into_iter().enumerate().filter(|(_, n)| *n > 0).filter_map(move |(ord, n)| {
            let mut value = String::new();
            match column.ord_to_str(ord as u64, &mut value) {
                Ok(true) => Some((value, u64::from(n))),
                _ => None,
            }
        })
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
