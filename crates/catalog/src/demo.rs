//! Generated catalogs: the demo catalog a newcomer's shop starts with, and large synthetic
//! catalogs for load tests (`emporium seed --products N`).
//!
//! Generation is deterministic for a seed, so two shops seeded alike hold the same products.
//! Products go through the same use case as the API's, validation and events included.

use std::{collections::HashSet, sync::Arc};

use futures_util::{StreamExt, stream};
use platform::money::Money;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::{
    commands::{NewProduct, NewVariant, PutCategory},
    domain::{Attributes, ProductStatus, Sku, Slug},
    error::CatalogError,
    products::Products,
};

/// Products in the demo catalog.
pub const DEMO_PRODUCTS: usize = 300;
const DEMO_SEED: u64 = 0x5eed_0001;

struct Kind {
    category: &'static str,
    parent: &'static str,
    brands: &'static [&'static str],
    models: &'static [&'static str],
    nouns: &'static [&'static str],
    /// Variant axis: attribute name and its values; each product offers a few of them.
    axis: (&'static str, &'static [&'static str]),
    colours: &'static [&'static str],
    materials: &'static [&'static str],
    /// Price range in cents.
    price: (i64, i64),
    blurb: &'static str,
}

const COLOURS: &[&str] = &["Black", "White", "Navy", "Grey", "Red", "Olive", "Blue", "Green", "Orange", "Sand"];
const SIZES: &[&str] = &["XS", "S", "M", "L", "XL", "XXL"];
const SHOE_SIZES: &[&str] = &["38", "39", "40", "41", "42", "43", "44", "45", "46"];

const PARENTS: &[(&str, &str)] = &[
    ("shoes", "Shoes"),
    ("clothing", "Clothing"),
    ("electronics", "Electronics"),
    ("home", "Home & kitchen"),
    ("outdoor", "Outdoor"),
];

const KINDS: &[Kind] = &[
    Kind {
        category: "running-shoes",
        parent: "shoes",
        brands: &["Hoka", "Asics", "Brooks", "Saucony", "Nike", "Adidas"],
        models: &["Clifton", "Speedgoat", "Novablast", "Ghost", "Ride", "Pegasus", "Adizero", "Kinvara"],
        nouns: &["Running Shoe", "Trail Shoe", "Road Runner"],
        axis: ("size", SHOE_SIZES),
        colours: COLOURS,
        materials: &["mesh", "knit"],
        price: (6_999, 18_999),
        blurb: "A cushioned, breathable shoe for daily miles, with a responsive foam midsole and a grippy outsole.",
    },
    Kind {
        category: "hiking-boots",
        parent: "shoes",
        brands: &["Salomon", "Merrell", "Lowa", "Scarpa", "Keen"],
        models: &["Quest", "Moab", "Renegade", "Zodiac", "Targhee", "Cross Hike"],
        nouns: &["Hiking Boot", "Mid GTX Boot", "Approach Shoe"],
        axis: ("size", SHOE_SIZES),
        colours: &["Brown", "Grey", "Black", "Olive"],
        materials: &["leather", "suede", "nubuck"],
        price: (9_999, 27_999),
        blurb: "A waterproof boot with ankle support and a lugged sole for rocky trails and long days out.",
    },
    Kind {
        category: "t-shirts",
        parent: "clothing",
        brands: &["Patagonia", "Uniqlo", "Arket", "Carhartt", "Levi's"],
        models: &["Essential", "Heavyweight", "Pocket", "Organic", "Slim", "Relaxed"],
        nouns: &["T-Shirt", "Tee", "Crew Neck Tee"],
        axis: ("size", SIZES),
        colours: COLOURS,
        materials: &["organic cotton", "cotton", "merino"],
        price: (1_499, 4_999),
        blurb: "A soft everyday tee that keeps its shape wash after wash.",
    },
    Kind {
        category: "jackets",
        parent: "clothing",
        brands: &["Patagonia", "Arc'teryx", "The North Face", "Rab", "Fjällräven"],
        models: &["Torrentshell", "Beta", "Nuptse", "Microlight", "Greenland", "Nano Puff"],
        nouns: &["Jacket", "Rain Jacket", "Down Jacket", "Shell"],
        axis: ("size", SIZES),
        colours: COLOURS,
        materials: &["recycled nylon", "down", "Gore-Tex", "polyester"],
        price: (12_999, 59_999),
        blurb: "A packable layer that shrugs off wind and rain, cut to move with you.",
    },
    Kind {
        category: "hoodies",
        parent: "clothing",
        brands: &["Champion", "Carhartt", "Nike", "Arket", "Patagonia"],
        models: &["Reverse Weave", "Classic", "Tech Fleece", "Loopback", "Uprisal"],
        nouns: &["Hoodie", "Zip Hoodie", "Pullover Hoodie"],
        axis: ("size", SIZES),
        colours: COLOURS,
        materials: &["cotton fleece", "organic cotton"],
        price: (4_999, 12_999),
        blurb: "A warm, brushed-back fleece hoodie with a roomy kangaroo pocket.",
    },
    Kind {
        category: "headphones",
        parent: "electronics",
        brands: &["Sony", "Bose", "Sennheiser", "Apple", "Jabra"],
        models: &["WH-1000XM5", "QuietComfort", "Momentum", "AirPods Max", "Elite", "HD 560S"],
        nouns: &["Wireless Headphones", "Noise Cancelling Headphones", "Earbuds"],
        axis: ("color", &["Black", "Silver", "Midnight Blue", "White"]),
        colours: &[],
        materials: &["plastic", "aluminium"],
        price: (7_999, 54_999),
        blurb: "Rich sound, adaptive noise cancelling and all-day battery life, with controls that stay out of the way.",
    },
    Kind {
        category: "smartwatches",
        parent: "electronics",
        brands: &["Garmin", "Apple", "Suunto", "Polar", "Coros"],
        models: &["Forerunner", "Fenix", "Watch Series", "Race", "Vantage", "Pace"],
        nouns: &["GPS Watch", "Smartwatch", "Multisport Watch"],
        axis: ("color", &["Black", "Slate", "White", "Whitestone"]),
        colours: &[],
        materials: &["titanium", "stainless steel", "polymer"],
        price: (19_999, 89_999),
        blurb: "Training metrics, multi-band GPS and sleep tracking on a bright display that lasts for days.",
    },
    Kind {
        category: "speakers",
        parent: "electronics",
        brands: &["JBL", "Sonos", "Bose", "Ultimate Ears", "Marshall"],
        models: &["Flip", "Era", "SoundLink", "Boom", "Emberton", "Charge"],
        nouns: &["Bluetooth Speaker", "Smart Speaker", "Portable Speaker"],
        axis: ("color", &["Black", "White", "Blue", "Red"]),
        colours: &[],
        materials: &["fabric", "aluminium"],
        price: (4_999, 44_999),
        blurb: "Room-filling sound in a rugged, splash-proof body that goes where you go.",
    },
    Kind {
        category: "coffee",
        parent: "home",
        brands: &["Bialetti", "Hario", "Fellow", "De'Longhi", "Chemex"],
        models: &["Moka Express", "V60", "Stagg", "Dedica", "Ode", "Classic"],
        nouns: &["Coffee Maker", "Pour-Over Kettle", "Burr Grinder", "Espresso Machine"],
        axis: ("capacity", &["3 cup", "6 cup", "9 cup"]),
        colours: &["Silver", "Black", "White", "Copper"],
        materials: &["aluminium", "glass", "stainless steel"],
        price: (2_499, 39_999),
        blurb: "Better coffee at home: precise, well made and easy to clean.",
    },
    Kind {
        category: "cookware",
        parent: "home",
        brands: &["Le Creuset", "Lodge", "Tefal", "Staub", "Zwilling"],
        models: &["Signature", "Classic", "Ingenio", "Pro", "Twin"],
        nouns: &["Cast Iron Skillet", "Dutch Oven", "Frying Pan", "Saucepan"],
        axis: ("diameter", &["20 cm", "24 cm", "28 cm"]),
        colours: &["Volcanic", "Black", "Cerise", "Sage"],
        materials: &["cast iron", "stainless steel", "enamel"],
        price: (2_999, 34_999),
        blurb: "Even heat, a lifetime of use, and a finish that gets better with every meal.",
    },
    Kind {
        category: "backpacks",
        parent: "outdoor",
        brands: &["Osprey", "Deuter", "Fjällräven", "Gregory", "Patagonia"],
        models: &["Talon", "Futura", "Kånken", "Zulu", "Refugio", "Atmos"],
        nouns: &["Daypack", "Backpack", "Hiking Pack"],
        axis: ("volume", &["18 L", "22 L", "28 L", "36 L"]),
        colours: COLOURS,
        materials: &["recycled nylon", "Vinylon F", "polyester"],
        price: (5_999, 24_999),
        blurb: "A comfortable, ventilated pack with a hip belt and room for a day on the hill.",
    },
    Kind {
        category: "tents",
        parent: "outdoor",
        brands: &["MSR", "Big Agnes", "Hilleberg", "Vango", "Nordisk"],
        models: &["Hubba Hubba", "Copper Spur", "Nallo", "Soul", "Telemark"],
        nouns: &["Backpacking Tent", "Dome Tent", "Tunnel Tent"],
        axis: ("capacity", &["1 person", "2 person", "3 person"]),
        colours: &["Green", "Orange", "Sand", "Grey"],
        materials: &["ripstop nylon", "silnylon"],
        price: (19_999, 89_999),
        blurb: "A light, storm-worthy shelter that pitches fast and packs small.",
    },
];

/// Generates `count` products from `seed`. `synthetic` adds a serial number to every title,
/// so that any number of products have distinct titles, slugs and SKUs.
pub fn generate(count: usize, seed: u64, synthetic: bool) -> Vec<NewProduct> {
    generate_at(0, count, seed, synthetic)
}

/// Products `start..start + count` of the catalog [`generate`] would make for `seed`, with
/// `synthetic` titles: lets a large catalog be made a chunk at a time.
pub fn generate_at(start: usize, count: usize, seed: u64, synthetic: bool) -> Vec<NewProduct> {
    let mut rng = StdRng::seed_from_u64(seed ^ (start as u64).rotate_left(32));
    let mut slugs = HashSet::new();
    let mut products = Vec::with_capacity(count);
    let currency = platform::money::Currency::parse("EUR").expect("EUR is a currency");
    for i in start..start + count {
        let kind = &KINDS[i % KINDS.len()];
        let brand = *kind.brands.choose(&mut rng).expect("brands are listed");
        let model = *kind.models.choose(&mut rng).expect("models are listed");
        let noun = *kind.nouns.choose(&mut rng).expect("nouns are listed");
        let generation = rng.gen_range(1..=9);
        let mut title = format!("{brand} {model} {generation} {noun}");
        if synthetic {
            title = format!("{title} {}", i + 1);
        }
        let mut slug = Slug::derive(&title).expect("generated titles have words");
        let mut n = 2;
        while !slugs.insert(slug.clone()) {
            slug = Slug::parse(&format!("{}-{n}", Slug::derive(&title).expect("words").as_str())).expect("valid");
            n += 1;
        }
        let mut attributes = Attributes::new();
        if let Some(colour) = kind.colours.choose(&mut rng) {
            attributes.insert("color".into(), (*colour).into());
        }
        if let Some(material) = kind.materials.choose(&mut rng) {
            attributes.insert("material".into(), (*material).into());
        }
        let (low, high) = kind.price;
        let base = (rng.gen_range(low..=high) / 100) * 100 + 99;
        let (axis, values) = kind.axis;
        let offered = rng.gen_range(2..=values.len().min(5));
        let start = rng.gen_range(0..=values.len() - offered);
        let code: String = slug.as_str().split('-').filter_map(|w| w.chars().next()).collect::<String>().to_uppercase();
        let variants = values[start..start + offered]
            .iter()
            .enumerate()
            .map(|(v, value)| {
                // Bigger sizes cost a little more, as they do in real shops.
                let price = if axis == "size" { base } else { base + v as i64 * 1_000 };
                let on_hand = if rng.gen_bool(0.1) { 0 } else { rng.gen_range(1..=60) };
                NewVariant {
                    sku: Sku::parse(&format!("{code}-{}-{}", i + 1, value.replace(' ', "").to_uppercase()))
                        .expect("valid sku"),
                    title: format!("{title} — {value}"),
                    price: Money::new(price, currency),
                    attributes: Attributes::from([(axis.to_owned(), (*value).to_owned())]),
                    on_hand,
                }
            })
            .collect();
        let colour = attributes.get("color").map(|c| c.to_lowercase());
        let description = match &colour {
            Some(colour) => format!("{} The {model} by {brand}, in {colour}.", kind.blurb),
            None => format!("{} The {model} by {brand}.", kind.blurb),
        };
        products.push(NewProduct {
            images: vec![format!("https://picsum.photos/seed/{}/800/800", slug.as_str())],
            slug: Some(slug),
            description,
            brand: Some(brand.to_owned()),
            category: Slug::parse(kind.category).expect("valid category"),
            attributes,
            status: ProductStatus::Active,
            variants,
            title,
        });
    }
    products
}

/// Creates the category tree every generated catalog uses.
pub async fn categories(products: &Products) -> Result<(), CatalogError> {
    for (slug, name) in PARENTS {
        let slug = Slug::parse(slug).expect("valid slug");
        products.put_category(&slug, PutCategory { name: (*name).to_owned(), parent: None }).await?;
    }
    for kind in KINDS {
        let slug = Slug::parse(kind.category).expect("valid slug");
        let parent = Some(Slug::parse(kind.parent).expect("valid slug"));
        products.put_category(&slug, PutCategory { name: slug.humanize(), parent }).await?;
    }
    Ok(())
}

/// Loads the demo catalog into a catalog with no products yet.
pub async fn load_if_empty(products: &Arc<Products>) -> Result<(), CatalogError> {
    if products.store().has_products().await? {
        return Ok(());
    }
    tracing::info!(products = DEMO_PRODUCTS, "loading the demo catalog");
    categories(products).await?;
    insert(products, generate(DEMO_PRODUCTS, DEMO_SEED, false), 4, |_| {}).await?;
    Ok(())
}

/// Inserts products with `concurrency` writers, calling `progress` after each; returns how
/// many were created. Products whose slug or SKU exists already are skipped.
pub async fn insert(
    products: &Arc<Products>,
    batch: Vec<NewProduct>,
    concurrency: usize,
    progress: impl Fn(usize),
) -> Result<usize, CatalogError> {
    let mut created = 0;
    let mut results = stream::iter(batch)
        .map(|product| {
            let products = products.clone();
            async move { products.create(product, None).await }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = results.next().await {
        match result {
            Ok(_) => created += 1,
            Err(CatalogError::SlugTaken(_) | CatalogError::SkuTaken(_)) => {}
            Err(error) => return Err(error),
        }
        progress(1);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_distinct() {
        let a = generate(500, 7, true);
        let b = generate(500, 7, true);
        assert_eq!(a.iter().map(|p| &p.title).collect::<Vec<_>>(), b.iter().map(|p| &p.title).collect::<Vec<_>>());
        let slugs: HashSet<_> = a.iter().map(|p| p.slug.clone()).collect();
        assert_eq!(slugs.len(), 500);
        let skus: HashSet<_> = a.iter().flat_map(|p| p.variants.iter().map(|v| v.sku.clone())).collect();
        assert_eq!(skus.len(), a.iter().map(|p| p.variants.len()).sum::<usize>());
        assert!(a.iter().all(|p| !p.variants.is_empty() && p.brand.is_some()));
    }
}
