//! The statsd sink (`envoy.stat_sinks.statsd` over UDP): counters as deltas since the last
//! flush, gauges as values, every histogram value as a timer when it is recorded.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;

use super::histogram::HistogramSink;
use super::store::{Metric, Store};

/// A UDP statsd sink.
#[derive(Debug)]
pub struct StatsdSink {
    socket: UdpSocket,
    target: SocketAddr,
    prefix: String,
    last: Mutex<HashMap<String, u64>>,
}

impl StatsdSink {
    /// A sink sending to `target` with names prefixed by `prefix` (Envoy's default: "envoy").
    pub fn new(target: SocketAddr, prefix: &str) -> std::io::Result<Self> {
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            target,
            prefix: prefix.to_string(),
            last: Mutex::new(HashMap::new()),
        })
    }

    fn send(&self, line: &str) {
        // Like Envoy's UDP sink, a full socket buffer drops the datagram.
        let _ = self.socket.send_to(line.as_bytes(), self.target);
    }

    /// Sends every used counter's delta since the last flush and every used gauge.
    pub fn flush(&self, store: &Store) {
        let mut last = match self.last.lock() {
            Ok(l) => l,
            Err(e) => e.into_inner(),
        };
        let mut batch = String::new();
        for (name, e) in store.snapshot() {
            let line = match &e.metric {
                Metric::Counter(c) if c.used() => {
                    let v = c.value();
                    let prev = last.insert(name.clone(), v).unwrap_or(0);
                    if v == prev {
                        continue;
                    }
                    format!("{}.{name}:{}|c", self.prefix, v.saturating_sub(prev))
                }
                Metric::Gauge(g) if g.used() => {
                    format!("{}.{name}:{}|g", self.prefix, g.rendered())
                }
                _ => continue,
            };
            if batch.len() + line.len() + 1 > 1400 {
                self.send(&batch);
                batch.clear();
            }
            if !batch.is_empty() {
                batch.push('\n');
            }
            batch.push_str(&line);
        }
        if !batch.is_empty() {
            self.send(&batch);
        }
    }
}

impl HistogramSink for StatsdSink {
    fn record(&self, name: &str, value: f64) {
        self.send(&format!(
            "{}.{name}:{}|ms",
            self.prefix,
            value.round() as u64
        ));
    }
}

impl HistogramSink for Vec<std::sync::Arc<StatsdSink>> {
    fn record(&self, name: &str, value: f64) {
        for s in self {
            s.record(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counters_are_deltas_and_timers_are_sent() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let sink = Arc::new(StatsdSink::new(rx.local_addr().unwrap(), "envoy").unwrap());
        let store = Store::default().with_histogram_sink(sink.clone());
        store.counter("a.b").add(3);
        store.gauge("g").set(7);
        sink.flush(&store);
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(got.contains("envoy.a.b:3|c"), "{got}");
        assert!(got.contains("envoy.g:7|g"), "{got}");
        store.counter("a.b").add(2);
        sink.flush(&store);
        let n = rx.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("envoy.a.b:2|c"));
        store.histogram("h").record(12.4);
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"envoy.h:12|ms");
    }
}
