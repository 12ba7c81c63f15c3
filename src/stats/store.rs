//! The stat registry. Stats are created once (at config time, or on first use) and updated
//! lock-free on the data path through the handles it returns: an `Arc` per stat registered
//! alone, or a [`Block`] holding one object's fixed set of stats. A block's names belong to
//! it; the same name registered alone as well would be listed twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::block::{Block, BlockTags, Layout, SharedNames};
use super::histogram::{DEFAULT_BUCKETS, Histogram, HistogramSink};
use super::matcher::Pattern;
use super::matcher::StatsMatcher;
use super::tags::{ExtractedName, TagProducer};

/// A monotonically increasing count: twice the count, plus one once it was written (so the
/// value and Envoy's "used" flag share one word, and a write after the first is one atomic
/// add).
#[derive(Debug, Default)]
pub struct Counter {
    raw: AtomicU64,
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`; marks the counter used, as Envoy does on every write.
    pub fn add(&self, n: u64) {
        let before = self.raw.fetch_add(n << 1, Ordering::Relaxed);
        if before & 1 == 0 {
            self.raw.fetch_or(1, Ordering::Relaxed);
        }
    }
    /// The current value.
    pub fn value(&self) -> u64 {
        self.raw.load(Ordering::Relaxed) >> 1
    }
    /// Whether it was ever written.
    pub fn used(&self) -> bool {
        self.raw.load(Ordering::Relaxed) & 1 == 1
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge {
    value: AtomicI64,
    used: AtomicBool,
    /// Holds a full-range unsigned value (a version hash) rather than a count.
    unsigned: AtomicBool,
}

impl Gauge {
    fn mark(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.sub(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: i64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.mark();
    }
    /// Subtracts `n`.
    pub fn sub(&self, n: i64) {
        self.value.fetch_sub(n, Ordering::Relaxed);
        self.mark();
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
        self.mark();
    }
    /// Sets a full-range unsigned value (Envoy's `version` gauges hold a 64-bit hash).
    pub fn set_u64(&self, v: u64) {
        self.unsigned.store(true, Ordering::Relaxed);
        self.value.store(v as i64, Ordering::Relaxed);
        self.mark();
    }
    /// The current value.
    pub fn value(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
    /// The value as rendered: Envoy's gauges are unsigned, so a count is never below zero.
    pub fn rendered(&self) -> u64 {
        let v = self.value.load(Ordering::Relaxed);
        if self.unsigned.load(Ordering::Relaxed) {
            v as u64
        } else {
            v.max(0) as u64
        }
    }
    /// Whether it was ever written.
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

/// What kind of stat a [`Metric`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// A counter or gauge registered alone, or one slot of a [`Block`].
#[derive(Debug)]
pub enum Shared<T> {
    /// Registered alone under its name.
    Alone(Arc<T>),
    /// Slot `.1` of a block.
    Slot(Block, usize),
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        match self {
            Shared::Alone(a) => Shared::Alone(a.clone()),
            Shared::Slot(b, i) => Shared::Slot(b.clone(), *i),
        }
    }
}

impl std::ops::Deref for Shared<Counter> {
    type Target = Counter;
    fn deref(&self) -> &Counter {
        match self {
            Shared::Alone(c) => c,
            Shared::Slot(b, i) => b.counter(*i),
        }
    }
}

impl std::ops::Deref for Shared<Gauge> {
    type Target = Gauge;
    fn deref(&self) -> &Gauge {
        match self {
            Shared::Alone(g) => g,
            Shared::Slot(b, i) => b.gauge(*i),
        }
    }
}

/// One registered stat.
#[derive(Debug, Clone)]
pub enum Metric {
    /// A counter.
    Counter(Shared<Counter>),
    /// A gauge.
    Gauge(Shared<Gauge>),
    /// A histogram.
    Histogram(Arc<Histogram>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub metric: Metric,
    pub extracted: Tags,
}

/// A stat's tag-extracted name and tags, interned: the same names and values recur across
/// thousands of stats (every cluster has the same stat names and its name in ~40 of them).
#[derive(Debug, Clone)]
pub(crate) struct Tags {
    pub name: Arc<str>,
    pub tags: TagList,
}

/// A stat's extracted tags, in order.
pub(crate) type TagList = Arc<[(Arc<str>, Arc<str>)]>;

/// The registry of every stat: stats registered alone, keyed by their full Envoy name, and
/// blocks, keyed by prefix and layout.
#[derive(Debug)]
pub struct Store {
    entries: RwLock<BTreeMap<String, Entry>>,
    blocks: RwLock<hashbrown::HashTable<Block>>,
    hasher: std::hash::RandomState,
    default_buckets: Arc<[f64]>,
    pub(super) interned: std::sync::Mutex<Interner>,
    tags: TagProducer,
    matcher: StatsMatcher,
    buckets: Vec<(Pattern, Arc<[f64]>)>,
    sink: Option<Arc<dyn HistogramSink>>,
    deferred_creation: bool,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(TagProducer::default_envoy(), StatsMatcher::default())
    }
}

impl Store {
    /// Builds a store with the given tag extractors and inclusion/exclusion matcher.
    pub fn new(tags: TagProducer, matcher: StatsMatcher) -> Self {
        Self {
            entries: RwLock::new(BTreeMap::new()),
            blocks: Default::default(),
            hasher: Default::default(),
            default_buckets: Arc::from(&DEFAULT_BUCKETS[..]),
            interned: Default::default(),
            tags,
            matcher,
            buckets: Vec::new(),
            sink: None,
            deferred_creation: false,
        }
    }

    /// `deferred_stat_options.enable_deferred_creation_stats`: cluster traffic stats are
    /// created on first use.
    pub fn with_deferred_creation(mut self, deferred: bool) -> Self {
        self.deferred_creation = deferred;
        self
    }

    /// Whether cluster traffic stats wait for their first use.
    pub fn deferred_creation(&self) -> bool {
        self.deferred_creation
    }

    /// Sets `histogram_bucket_settings`: the first pattern a histogram's name matches gives its
    /// bucket bounds.
    pub fn with_buckets(mut self, buckets: Vec<(Pattern, Arc<[f64]>)>) -> Self {
        self.buckets = buckets;
        self
    }

    /// Sends every recorded histogram value to `sink` as well.
    pub fn with_histogram_sink(mut self, sink: Arc<dyn HistogramSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Returns the counter named `name`, creating it on first use. A name the stats matcher
    /// rejects gets a working counter that is not listed, as Envoy's null stats.
    pub fn counter(&self, name: &str) -> Arc<Counter> {
        match self.get_or_insert(name, || Metric::Counter(Shared::Alone(Arc::default()))) {
            Metric::Counter(Shared::Alone(c)) => c,
            _ => Arc::default(),
        }
    }

    /// Returns the gauge named `name`, creating it on first use.
    pub fn gauge(&self, name: &str) -> Arc<Gauge> {
        match self.get_or_insert(name, || Metric::Gauge(Shared::Alone(Arc::default()))) {
            Metric::Gauge(Shared::Alone(g)) => g,
            _ => Arc::default(),
        }
    }

    /// Returns the histogram named `name`, creating it on first use.
    pub fn histogram(&self, name: &str) -> Arc<Histogram> {
        let make = || {
            let bounds = self
                .buckets
                .iter()
                .find(|(p, _)| p.matches(name))
                .map(|(_, b)| b.clone())
                .unwrap_or_else(|| self.default_buckets.clone());
            let sink = self.sink.clone().map(|s| (name.to_string(), s));
            Metric::Histogram(Arc::new(Histogram::with_bounds(bounds, sink)))
        };
        match self.get_or_insert(name, make) {
            Metric::Histogram(h) => h,
            _ => Arc::default(),
        }
    }

    /// Looks up a stat by its full name (a block's stat by a scan of the blocks: for tests and
    /// tools, not the data path).
    pub fn get(&self, name: &str) -> Option<Metric> {
        if let Some(e) = self.read().get(name) {
            return Some(e.metric.clone());
        }
        let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
        blocks.iter().find_map(|b| b.metric(name))
    }

    /// The block of `layout` under `prefix`, created on first use.
    pub fn block(&self, prefix: &str, layout: &'static Layout) -> Block {
        let hash = self.block_hash(prefix, layout);
        let is = |b: &Block| b.is(prefix, layout);
        {
            let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = blocks.find(hash, is) {
                return b.clone();
            }
        }
        let tags = {
            let mut interned = self.interned.lock().unwrap_or_else(|e| e.into_inner());
            let mut name = String::with_capacity(prefix.len() + 40);
            let stats = layout.counters.iter().chain(layout.gauges).map(|suffix| {
                name.clear();
                name.push_str(prefix);
                name.push_str(suffix);
                let listed = self.matcher.accepts(&name);
                listed.then(|| interned.tags(self.tags.extract(&name)))
            });
            let stats = stats.collect();
            BlockTags::new(layout, stats, &mut interned.block_names)
        };
        let mut blocks = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        match blocks.entry(hash, is, |b| self.block_hash(b.prefix(), b.layout())) {
            hashbrown::hash_table::Entry::Occupied(o) => o.get().clone(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(Block::new(prefix, layout, tags)).get().clone()
            }
        }
    }

    fn block_hash(&self, prefix: &str, layout: &'static Layout) -> u64 {
        use std::hash::BuildHasher;
        self.hasher
            .hash_one((prefix, std::ptr::from_ref(layout) as usize))
    }

    /// A point-in-time copy of every listed stat, sorted by name.
    pub(crate) fn snapshot(&self) -> Vec<(String, Entry)> {
        let mut all: Vec<(String, Entry)> = self
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let blocks = self.blocks.read().unwrap_or_else(|e| e.into_inner());
        for b in blocks.iter() {
            all.extend(b.entries());
        }
        drop(blocks);
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock leaves the map itself intact; keep serving stats.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn get_or_insert(&self, name: &str, make: impl FnOnce() -> Metric) -> Metric {
        if let Some(e) = self.read().get(name) {
            return e.metric.clone();
        }
        let metric = make();
        if !self.matcher.accepts(name) {
            return metric;
        }
        let extracted = self.extract(name);
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert(Entry { metric, extracted })
            .metric
            .clone()
    }

    /// The tag-extracted name and tags of `name`, interned.
    fn extract(&self, name: &str) -> Tags {
        let extracted = self.tags.extract(name);
        let mut interned = self.interned.lock().unwrap_or_else(|e| e.into_inner());
        interned.tags(extracted)
    }
}

type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Interned stat names, tag names and values, and whole tag lists: the same ones recur
/// across thousands of stats (every stat of one cluster has the same tag list).
#[derive(Debug, Default)]
pub(super) struct Interner {
    strings: FastSet<Arc<str>>,
    lists: FastSet<TagList>,
    pub(super) block_names: SharedNames,
}

impl Interner {
    fn string(&mut self, s: String) -> Arc<str> {
        if let Some(v) = self.strings.get(s.as_str()) {
            return v.clone();
        }
        let v: Arc<str> = Arc::from(s);
        self.strings.insert(v.clone());
        v
    }

    fn tags(&mut self, e: ExtractedName) -> Tags {
        let name = self.string(e.name);
        let tags: Vec<(Arc<str>, Arc<str>)> = e
            .tags
            .into_iter()
            .map(|(k, v)| (self.string(k), self.string(v)))
            .collect();
        let tags = match self.lists.get(tags.as_slice()) {
            Some(t) => t.clone(),
            None => {
                let t: TagList = Arc::from(tags);
                self.lists.insert(t.clone());
                t
            }
        };
        Tags { name, tags }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_is_shared_by_name() {
        let s = Store::default();
        s.counter("cluster.a.upstream_rq_total").inc();
        s.counter("cluster.a.upstream_rq_total").add(2);
        assert_eq!(s.counter("cluster.a.upstream_rq_total").value(), 3);
    }

    #[test]
    fn a_counter_is_used_from_its_first_write_even_of_zero() {
        let c = Counter::default();
        assert!(!c.used());
        c.add(0);
        assert!(c.used());
        assert_eq!(c.value(), 0);
        c.add(5);
        c.inc();
        assert_eq!(c.value(), 6);
        assert!(c.used());
    }

    #[test]
    fn rejected_stat_still_counts_but_is_not_listed() {
        let m = StatsMatcher::new(
            vec![],
            vec![super::super::matcher::Pattern::Prefix("x".into())],
        );
        let s = Store::new(TagProducer::default_envoy(), m);
        let c = s.counter("x.y");
        c.inc();
        assert_eq!(c.value(), 1);
        assert!(s.get("x.y").is_none());
    }
}
