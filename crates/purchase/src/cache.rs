//! The daemon's read cache, shared by every purchase it drives.
//!
//! Three calls of a purchase (SKU, product, availabilities) are identical for every purchase of
//! the same product, SKU, country and segment, and a subscription once registered stays so.
//! Answering them from memory saves three of a software purchase's six calls. Entries are keyed
//! by every parameter of the call, live `ttl` (default one hour; zero turns the cache off), and
//! a cart line that says its catalog item is no longer valid evicts that item's entries, so the
//! rediscovery that follows asks Partner Center.
//!
//! Only successful replies are kept, and only ones whose content a later purchase may use as
//! is: a registration is kept only once it reads `registered`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pcsaga_engine::Clock;
use pcsaga_partner_center::models::{CartErrorCode, RegistrationState};

use crate::call::{Call, Outcome, Reply};
use crate::context::PurchaseContext;

/// The default time an entry lives.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Entries kept at most; beyond it expired entries are dropped and, if none expired, nothing
/// new is kept until some do.
const MAX_ENTRIES: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Sku {
        product: String,
        sku: String,
        country: String,
    },
    Product {
        product: String,
        country: String,
    },
    Availabilities {
        product: String,
        sku: String,
        country: String,
        segment: String,
    },
    Registered {
        customer: String,
        subscription: String,
    },
}

/// What the cache did, for status and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// The cache.
#[derive(Debug)]
pub struct ReadCache {
    ttl: Duration,
    clock: Arc<dyn Clock>,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, (DateTime<Utc>, Reply)>,
    stats: CacheStats,
}

impl ReadCache {
    /// A cache whose entries live `ttl` by `clock`; a zero `ttl` keeps nothing.
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            ttl,
            clock,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached reply to `call`, if there is a fresh one.
    pub fn answer(&self, ctx: &PurchaseContext, call: &Call) -> Option<Outcome> {
        let key = key_of(ctx, call)?;
        if self.ttl.is_zero() {
            return None;
        }
        let now = self.clock.now();
        let mut entries = self.lock();
        match entries.map.get(&key) {
            Some((until, reply)) if now < *until => {
                let reply = reply.clone();
                entries.stats.hits += 1;
                Some(Ok(reply))
            }
            _ => {
                entries.stats.misses += 1;
                None
            }
        }
    }

    /// Learns from a call's outcome: keeps a cacheable reply, and evicts the catalog entries
    /// of cart lines whose catalog item is no longer valid.
    pub fn learn(&self, ctx: &PurchaseContext, call: &Call, outcome: &Outcome) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(reply) = outcome else { return };
        if let Reply::Cart(cart) = reply {
            let stale: Vec<usize> = cart
                .line_items
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    l.error
                        .as_ref()
                        .is_some_and(|e| e.error_code == CartErrorCode::CatalogItemIdIsNotValid)
                })
                .map(|(position, l)| {
                    l.id.and_then(|i| usize::try_from(i).ok())
                        .unwrap_or(position)
                })
                .collect();
            if !stale.is_empty() {
                self.evict_items(ctx, &stale);
            }
            return;
        }
        let cacheable = match reply {
            Reply::Registration(state) => *state == RegistrationState::Registered,
            Reply::Sku(_) | Reply::Product(_) | Reply::Availabilities(_) => true,
            _ => false,
        };
        let Some(key) = key_of(ctx, call).filter(|_| cacheable) else {
            return;
        };
        let until = self.clock.now()
            + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX / 2);
        let mut entries = self.lock();
        if entries.map.len() >= MAX_ENTRIES {
            let now = self.clock.now();
            entries.map.retain(|_, (until, _)| now < *until);
            if entries.map.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.map.insert(key, (until, reply.clone()));
    }

    fn evict_items(&self, ctx: &PurchaseContext, items: &[usize]) {
        let mut entries = self.lock();
        for index in items {
            let Some(item) = ctx.request.items.get(*index) else {
                continue;
            };
            let country = ctx.request.country.to_ascii_uppercase();
            for key in [
                Key::Sku {
                    product: item.product_id.clone(),
                    sku: item.sku_id.clone(),
                    country: country.clone(),
                },
                Key::Product {
                    product: item.product_id.clone(),
                    country: country.clone(),
                },
                Key::Availabilities {
                    product: item.product_id.clone(),
                    sku: item.sku_id.clone(),
                    country: country.clone(),
                    segment: ctx.request.segment.clone(),
                },
            ] {
                if entries.map.remove(&key).is_some() {
                    entries.stats.evictions += 1;
                }
            }
        }
    }

    /// Hits, misses and evictions so far.
    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }
}

/// The key of a cacheable call: every parameter the call sends.
fn key_of(ctx: &PurchaseContext, call: &Call) -> Option<Key> {
    let request = &ctx.request;
    // Country codes are case-insensitive on the wire.
    let country = request.country.to_ascii_uppercase();
    let item = |i: &usize| request.items.get(*i);
    Some(match call {
        Call::GetSku { item: i } => {
            let item = item(i)?;
            Key::Sku {
                product: item.product_id.clone(),
                sku: item.sku_id.clone(),
                country,
            }
        }
        Call::GetProduct { item: i } => Key::Product {
            product: item(i)?.product_id.clone(),
            country,
        },
        Call::ListAvailabilities { item: i } => {
            let item = item(i)?;
            Key::Availabilities {
                product: item.product_id.clone(),
                sku: item.sku_id.clone(),
                country,
                segment: request.segment.clone(),
            }
        }
        Call::GetRegistration { subscription_id } => Key::Registered {
            customer: request.customer_id.clone(),
            subscription: subscription_id.clone(),
        },
        _ => return None,
    })
}
