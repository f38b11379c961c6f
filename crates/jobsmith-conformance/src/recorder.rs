//! A `metrics` recorder that keeps the counters in memory, so that the suite
//! can check what a backend counts.
//!
//! The recorder of a process is global and set once: [`counters`] installs
//! this one the first time a case asks for it. Cases that share a process
//! (`cargo test`) read only the series of a queue of their own.

use jobsmith_core::lock::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A series' labels, sorted by key.
type Labels = Vec<(String, String)>;

/// Counters by name and labels, as recorded so far in this process.
#[derive(Debug, Default)]
pub struct Counters {
    series: Mutex<HashMap<(String, Labels), Arc<Count>>>,
}

#[derive(Debug, Default)]
struct Count(AtomicU64);

impl metrics::CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

impl Counters {
    /// The sum of the counter `name` over every series whose label `key` is `value`.
    pub fn sum(&self, name: &str, key: &str, value: &str) -> u64 {
        let series = self.series.lock_unpoisoned();
        series
            .iter()
            .filter(|((n, labels), _)| {
                n == name && labels.iter().any(|(k, v)| k == key && v == value)
            })
            .map(|(_, count)| count.0.load(Ordering::SeqCst))
            .sum()
    }

    /// Every series of the counter `name` whose label `key` is `value`: the labels and the count.
    pub fn series(&self, name: &str, key: &str, value: &str) -> Vec<(Labels, u64)> {
        let series = self.series.lock_unpoisoned();
        let mut out: Vec<_> = series
            .iter()
            .filter(|((n, labels), _)| {
                n == name && labels.iter().any(|(k, v)| k == key && v == value)
            })
            .map(|((_, labels), count)| (labels.clone(), count.0.load(Ordering::SeqCst)))
            .collect();
        out.sort();
        out
    }
}

/// The recorder: counters only; gauges and histograms are dropped.
#[derive(Debug)]
struct Recorder(&'static Counters);

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let mut labels: Labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let mut series = self.0.series.lock_unpoisoned();
        let count = series.entry((key.name().to_owned(), labels)).or_default();
        metrics::Counter::from_arc(Arc::clone(count))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// The counters of this process, installing the recorder on first use.
///
/// # Panics
///
/// When another `metrics` recorder was installed in this process first:
/// the suite could then not see what is counted.
pub fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<&'static Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let counters: &'static Counters = Box::leak(Box::default());
        metrics::set_global_recorder(Recorder(counters)).expect(
            "the suite installs its own metrics recorder: run it in a test binary that installs none",
        );
        counters
    })
}
