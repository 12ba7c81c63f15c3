//! Stats with Envoy's names: counters, gauges and histograms registered once in a [`Store`],
//! tag extraction as Envoy's `stats_config` describes it, and the text and Prometheus renderers
//! the admin API serves.

mod block;
mod histogram;
mod matcher;
mod render;
pub mod statsd;
mod store;
mod tags;

pub use block::{Block, Layout, slot};
pub use histogram::{Histogram, HistogramSink};
pub use matcher::{Pattern, StatsMatcher};
pub use render::{TextQuery, render_prometheus, render_text};
pub use store::{Counter, Gauge, Metric, MetricKind, Shared, Store};
pub use tags::{TagExtractor, TagProducer};
