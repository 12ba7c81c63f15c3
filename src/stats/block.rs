//! Stat blocks: the fixed set of counters and gauges one object has under its prefix (a
//! cluster's `membership_*` gauges, a subscription's `update_*` stats), with their values in
//! one allocation. Their full names are built only when the admin API lists them, so ten
//! thousand clusters do not hold a hundred thousand name strings and map entries.
//!
//! A block type is declared with [`stat_block!`](crate::stat_block), which gives it accessors
//! by stat name, as Envoy's stats structs do.

use std::sync::Arc;

use super::store::{Counter, Entry, Gauge, Metric, Shared, TagList, Tags};

/// The stat names of a block type: each is appended to the block's prefix.
#[derive(Debug)]
pub struct Layout {
    /// Counter names, in slot order.
    pub counters: &'static [&'static str],
    /// Gauge names, in slot order.
    pub gauges: &'static [&'static str],
}

/// One block: a prefix (`cluster.backend.`) and a value per stat of its layout.
#[derive(Debug)]
pub(crate) struct BlockData {
    pub prefix: Box<str>,
    pub layout: &'static Layout,
    pub counters: Box<[Counter]>,
    pub gauges: Box<[Gauge]>,
    /// The listed stats' names and tags; None when the stats matcher rejects them all (they
    /// still count, unlisted, as Envoy's null stats).
    pub tags: Option<BlockTags>,
}

/// The tag-extracted names and the tags of a block's stats, counters then gauges.
#[derive(Debug)]
pub(crate) struct BlockTags {
    /// Per stat, its tag-extracted name, or None when the stats matcher rejects it. Shared by
    /// every block of the layout whose names extract alike (all of them, as a rule).
    names: StatNames,
    lists: TagLists,
}

/// Per stat of a block, its tag-extracted name (None: not listed).
type StatNames = Arc<[Option<Arc<str>>]>;

#[derive(Debug)]
enum TagLists {
    /// Every listed stat has this list (as a rule: the prefix holds a block's only tags).
    Same(TagList),
    /// Per stat, in slot order.
    PerStat(Box<[TagList]>),
}

/// Per layout, the name lists of the first blocks of it whose names extracted differently,
/// which later blocks share when theirs extract alike. Names differ where a tag regex leaves
/// part of the prefix in them (Istio's cluster names keep their namespace and domain after the
/// default cluster-name tag takes the part before the first dot), so there is one list per
/// namespace, not per cluster. At most [`MAX_SHARED`] per layout are kept; a block beyond
/// them keeps its own list, so nothing accumulates however many names come and go.
#[derive(Debug, Default)]
pub(crate) struct SharedNames(Vec<(usize, Vec<StatNames>)>);

/// How many name lists of one layout [`SharedNames`] keeps.
const MAX_SHARED: usize = 64;

impl BlockTags {
    /// The block tags of `stats` (per slot: its interned name and tag list, None when
    /// unlisted); None when no stat is listed.
    pub(crate) fn new(
        layout: &'static Layout,
        stats: Vec<Option<Tags>>,
        shared: &mut SharedNames,
    ) -> Option<Self> {
        let first = stats.iter().flatten().next()?.tags.clone();
        let same = stats.iter().flatten().all(|t| Arc::ptr_eq(&t.tags, &first));
        let lists = if same {
            TagLists::Same(first)
        } else {
            let per_stat = stats.iter().map(|t| match t {
                Some(t) => t.tags.clone(),
                None => first.clone(),
            });
            TagLists::PerStat(per_stat.collect())
        };
        let key = std::ptr::from_ref(layout) as usize;
        let alike = |names: &[Option<Arc<str>>]| {
            names.len() == stats.len()
                && names.iter().zip(&stats).all(|(n, t)| match (n, t) {
                    (Some(n), Some(t)) => Arc::ptr_eq(n, &t.name),
                    (None, None) => true,
                    _ => false,
                })
        };
        let kept = match shared.0.iter().position(|(k, _)| *k == key) {
            Some(i) => &mut shared.0[i].1,
            None => {
                shared.0.push((key, Vec::new()));
                &mut shared.0.last_mut().expect("just pushed").1
            }
        };
        let names = match kept.iter().find(|n| alike(n)) {
            Some(n) => n.clone(),
            None => {
                let n: StatNames = stats.into_iter().map(|t| t.map(|t| t.name)).collect();
                if kept.len() < MAX_SHARED {
                    kept.push(n.clone());
                }
                n
            }
        };
        Some(Self { names, lists })
    }

    /// The name and tags of the stat in slot `i`, None when it is not listed.
    fn get(&self, i: usize) -> Option<Tags> {
        let name = self.names.get(i)?.clone()?;
        let tags = match &self.lists {
            TagLists::Same(l) => l.clone(),
            TagLists::PerStat(v) => v[i].clone(),
        };
        Some(Tags { name, tags })
    }
}

/// A shared handle to a block registered in a [`Store`](super::Store).
#[derive(Debug, Clone)]
pub struct Block(pub(crate) Arc<BlockData>);

impl Block {
    pub(crate) fn new(prefix: &str, layout: &'static Layout, tags: Option<BlockTags>) -> Self {
        Block(Arc::new(BlockData {
            prefix: prefix.into(),
            layout,
            counters: layout.counters.iter().map(|_| Counter::default()).collect(),
            gauges: layout.gauges.iter().map(|_| Gauge::default()).collect(),
            tags,
        }))
    }

    /// The counter in slot `i`.
    pub fn counter(&self, i: usize) -> &Counter {
        &self.0.counters[i]
    }

    /// The gauge in slot `i`.
    pub fn gauge(&self, i: usize) -> &Gauge {
        &self.0.gauges[i]
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.0.prefix
    }

    pub(crate) fn layout(&self) -> &'static Layout {
        self.0.layout
    }

    /// Whether this is the block of `layout` under `prefix`.
    pub(crate) fn is(&self, prefix: &str, layout: &'static Layout) -> bool {
        std::ptr::eq(self.0.layout, layout) && *self.0.prefix == *prefix
    }

    /// The stat of this block with full name `name`, if it has one (listed or not).
    pub(crate) fn metric(&self, name: &str) -> Option<Metric> {
        let suffix = name.strip_prefix(&*self.0.prefix)?;
        let layout = self.0.layout;
        if let Some(i) = layout.counters.iter().position(|c| *c == suffix) {
            return Some(Metric::Counter(Shared::Slot(self.clone(), i)));
        }
        let i = layout.gauges.iter().position(|g| *g == suffix)?;
        Some(Metric::Gauge(Shared::Slot(self.clone(), i)))
    }

    /// The listed stats of the block with their full names (built here, for listing).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (String, Entry)> + '_ {
        let layout = self.0.layout;
        let counters = layout
            .counters
            .iter()
            .enumerate()
            .map(|(i, n)| (n, Metric::Counter(Shared::Slot(self.clone(), i))));
        let gauges = layout
            .gauges
            .iter()
            .enumerate()
            .map(|(i, n)| (n, Metric::Gauge(Shared::Slot(self.clone(), i))));
        let tags = self.0.tags.as_ref();
        counters
            .chain(gauges)
            .enumerate()
            .filter_map(move |(i, (suffix, metric))| {
                let extracted = tags?.get(i)?;
                Some((
                    format!("{}{suffix}", self.0.prefix),
                    Entry { metric, extracted },
                ))
            })
    }
}

/// The slot of `name` in `names`, evaluated at compile time by [`stat_block!`]'s accessors.
pub const fn slot(names: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < names.len() {
        if same(names[i].as_bytes(), name.as_bytes()) {
            return i;
        }
        i += 1;
    }
    panic!("the stat is not in the block's layout")
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares a block type: a struct holding a [`Block`] with one accessor per stat.
///
/// ```ignore
/// stat_block! {
///     /// The membership gauges of a cluster.
///     pub struct Membership {
///         counters {}
///         gauges { membership_total: "membership_total" }
///     }
/// }
/// let m = Membership::new(&store, "cluster.backend.");
/// m.membership_total().set(3);
/// ```
#[macro_export]
macro_rules! stat_block {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            counters { $($(#[$cmeta:meta])* $counter:ident: $cname:literal),* $(,)? }
            gauges { $($(#[$gmeta:meta])* $gauge:ident: $gname:literal),* $(,)? }
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name($crate::stats::Block);

        #[allow(dead_code)]
        impl $name {
            /// The names of this block's stats.
            pub const LAYOUT: $crate::stats::Layout = $crate::stats::Layout {
                counters: &[$($cname),*],
                gauges: &[$($gname),*],
            };

            /// The block under `prefix` (ending in a dot), created on first use and shared
            /// by every later caller with the same prefix.
            pub fn new(store: &$crate::stats::Store, prefix: &str) -> Self {
                static LAYOUT: $crate::stats::Layout = $name::LAYOUT;
                Self(store.block(prefix, &LAYOUT))
            }

            $(
                $(#[$cmeta])*
                pub fn $counter(&self) -> &$crate::stats::Counter {
                    const SLOT: usize = $crate::stats::slot($name::LAYOUT.counters, $cname);
                    self.0.counter(SLOT)
                }
            )*
            $(
                $(#[$gmeta])*
                pub fn $gauge(&self) -> &$crate::stats::Gauge {
                    const SLOT: usize = $crate::stats::slot($name::LAYOUT.gauges, $gname);
                    self.0.gauge(SLOT)
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::super::{Metric, render_text};
    use super::super::{Pattern, StatsMatcher, Store, TagProducer, TextQuery, render_prometheus};
    use super::{Arc, TagLists};

    crate::stat_block! {
        /// A block for the tests.
        struct Sample {
            counters { total: "rq_total", failed: "rq_failed" }
            gauges { active: "cx.active" }
        }
    }

    #[test]
    fn blocks_under_one_prefix_share_their_values() {
        let store = Store::default();
        let a = Sample::new(&store, "cluster.backend.");
        a.total().add(2);
        Sample::new(&store, "cluster.backend.").total().inc();
        assert_eq!(a.total().value(), 3);
        assert_eq!(Sample::new(&store, "cluster.other.").total().value(), 0);
        match store.get("cluster.backend.rq_total") {
            Some(Metric::Counter(c)) => assert_eq!(c.value(), 3),
            other => panic!("{other:?}"),
        }
        assert!(store.get("cluster.backend.rq_missing").is_none());
    }

    #[test]
    fn block_stats_are_listed_in_order_with_stats_registered_alone() {
        let store = Store::default();
        store.counter("cluster.backend.alone").inc();
        let b = Sample::new(&store, "cluster.backend.");
        b.failed().inc();
        b.active().set(4);
        let text = render_text(&store, &TextQuery::default());
        assert_eq!(
            text,
            "cluster.backend.alone: 1\ncluster.backend.cx.active: 4\n\
             cluster.backend.rq_failed: 1\ncluster.backend.rq_total: 0\n"
        );
        let used = TextQuery {
            used_only: true,
            ..Default::default()
        };
        assert!(!render_text(&store, &used).contains("rq_total"));
        let prom = render_prometheus(&store, false, None);
        assert!(
            prom.contains("envoy_cluster_rq_failed{envoy_cluster_name=\"backend\"} 1\n"),
            "{prom}"
        );
    }

    crate::stat_block! {
        /// A block whose stats do not all have the same tags.
        struct Codes {
            counters { total: "upstream_rq_total", ok: "upstream_rq_200" }
            gauges {}
        }
    }

    #[test]
    fn blocks_of_one_layout_share_names_and_keep_per_stat_tags() {
        let store = Store::default();
        let a = Codes::new(&store, "cluster.a.");
        let b = Codes::new(&store, "cluster.b.");
        a.ok().add(2);
        b.total().inc();
        let (ta, tb) = (a.0.0.tags.as_ref().unwrap(), b.0.0.tags.as_ref().unwrap());
        assert!(Arc::ptr_eq(&ta.names, &tb.names));
        let prom = render_prometheus(&store, false, None);
        for line in [
            "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"a\"} 2\n",
            "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"b\"} 1\n",
        ] {
            assert!(prom.contains(line), "{line} in {prom}");
        }
        // Blocks whose names extract otherwise share a list of their own, and list right.
        let dotted = Codes::new(&store, "cluster.x.y.");
        dotted.total().inc();
        let td = dotted.0.0.tags.as_ref().unwrap();
        assert!(!Arc::ptr_eq(&ta.names, &td.names));
        let z = Codes::new(&store, "cluster.z.y.");
        assert!(Arc::ptr_eq(&td.names, &z.0.0.tags.as_ref().unwrap().names));
        // Past the limit, a block keeps its own list and nothing more is kept.
        for i in 0..super::MAX_SHARED {
            Codes::new(&store, &format!("cluster.a.n{i}."));
        }
        let early = Codes::new(&store, "cluster.b.n0.");
        let beyond = Codes::new(&store, "cluster.b.other.");
        let shared = |b: &Codes| {
            let names = &b.0.0.tags.as_ref().unwrap().names;
            let kept = &store.interned.lock().unwrap().block_names.0[0].1;
            assert_eq!(kept.len(), super::MAX_SHARED);
            kept.iter().any(|n| Arc::ptr_eq(n, names))
        };
        assert!(shared(&early));
        assert!(!shared(&beyond));
        assert_eq!(
            render_text(&store, &TextQuery::default())
                .matches("cluster.b.other.")
                .count(),
            2
        );
        let prom = render_prometheus(&store, false, None);
        assert!(
            prom.contains("envoy_cluster_y_upstream_rq_total{envoy_cluster_name=\"x\"} 1\n"),
            "{prom}"
        );
        // One tag list for a block whose stats all have the same tags.
        let s = Sample::new(&store, "cluster.a.");
        assert!(matches!(
            s.0.0.tags.as_ref().unwrap().lists,
            TagLists::Same(_)
        ));
        assert!(matches!(ta.lists, TagLists::PerStat(_)));
    }

    #[test]
    fn stats_the_matcher_rejects_count_but_are_not_listed() {
        let matcher = StatsMatcher::new(vec![], vec![Pattern::Suffix("rq_total".into())]);
        let store = Store::new(TagProducer::default_envoy(), matcher);
        let b = Sample::new(&store, "cluster.backend.");
        b.total().inc();
        assert_eq!(b.total().value(), 1);
        let text = render_text(&store, &TextQuery::default());
        assert!(!text.contains("rq_total"), "{text}");
        assert!(text.contains("cluster.backend.rq_failed: 0"), "{text}");
    }

    #[test]
    fn a_block_the_matcher_rejects_whole_counts_and_lists_nothing() {
        let matcher = StatsMatcher::new(vec![], vec![Pattern::Prefix("cluster.".into())]);
        let store = Store::new(TagProducer::default_envoy(), matcher);
        let b = Sample::new(&store, "cluster.backend.");
        b.total().add(5);
        b.active().set(2);
        assert_eq!(Sample::new(&store, "cluster.backend.").total().value(), 5);
        assert_eq!(render_text(&store, &TextQuery::default()), "");
        assert_eq!(render_prometheus(&store, false, None), "");
        match store.get("cluster.backend.cx.active") {
            Some(Metric::Gauge(g)) => assert_eq!(g.value(), 2),
            other => panic!("{other:?}"),
        }
    }
}
