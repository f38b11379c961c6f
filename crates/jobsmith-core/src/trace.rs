//! W3C trace context, carried from the enqueue into the job's run.
//!
//! An enqueue stores a `traceparent` in the envelope's `trace` field; the
//! worker records it on the job's span (field `trace`). A job that enqueues
//! another passes its own context on, so a chain of jobs shares one trace.
//!
//! With feature `opentelemetry`, the `traceparent` is that of the current
//! `tracing` span's OpenTelemetry context (through a
//! `tracing_opentelemetry` layer), and the worker makes each job's span a
//! child of it, so an exporter shows enqueue → job as one trace. Without the
//! feature, or outside any OpenTelemetry span, the `traceparent` in force for
//! the task ([`with_traceparent`]) is carried instead.

use std::future::Future;

tokio::task_local! {
    static TRACEPARENT: Option<String>;
}

/// The `traceparent` an enqueue from here carries: the current OpenTelemetry
/// span's (feature `opentelemetry`), else the one in force for this task.
pub fn current_traceparent() -> Option<String> {
    #[cfg(feature = "opentelemetry")]
    if let Some(tp) = otel::current() {
        return Some(tp);
    }
    TRACEPARENT.try_with(Clone::clone).ok().flatten()
}

/// Runs `fut` with `traceparent` in force, so the jobs it enqueues carry it.
pub async fn with_traceparent<F: Future>(traceparent: Option<String>, fut: F) -> F::Output {
    TRACEPARENT.scope(traceparent, fut).await
}

/// The parts of a W3C `traceparent` header: `00-{trace id}-{parent id}-{flags}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace's id; never all zeros.
    pub trace_id: [u8; 16],
    /// The parent span's id; never all zeros.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Reads a `traceparent` header value; `None` when it is not a valid one.
    ///
    /// ```
    /// use jobsmith_core::trace::TraceParent;
    /// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert_eq!(tp.flags, 1);
    /// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
    /// ```
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = hex::<1>(parts.next()?)?;
        let trace_id = hex::<16>(parts.next()?)?;
        let span_id = hex::<8>(parts.next()?)?;
        let flags = hex::<1>(parts.next()?)?;
        // Version 00 has exactly four fields; a later version may add more; ff is invalid.
        if version[0] == 0xff || (version[0] == 0 && parts.next().is_some()) {
            return None;
        }
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.span_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Makes `span` a child of the span `traceparent` names, for OpenTelemetry
/// exporters. Call it before the span is first entered. Without feature
/// `opentelemetry`, or without an OpenTelemetry layer, it does nothing.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    #[cfg(feature = "opentelemetry")]
    otel::set_parent(span, traceparent);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, traceparent);
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use super::TraceParent;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

    /// The `traceparent` of the current span's OpenTelemetry context, if it has a valid one.
    pub(super) fn current() -> Option<String> {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            TraceParent {
                trace_id: sc.trace_id().to_bytes(),
                span_id: sc.span_id().to_bytes(),
                flags: sc.trace_flags().to_u8(),
            }
            .to_string()
        })
    }

    pub(super) fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
        let Some(tp) = traceparent.and_then(TraceParent::parse) else {
            return;
        };
        let remote = SpanContext::new(
            TraceId::from_bytes(tp.trace_id),
            SpanId::from_bytes(tp.span_id),
            TraceFlags::new(tp.flags),
            true,
            TraceState::NONE,
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        match span.set_parent(cx) {
            // No OpenTelemetry layer, or the span is filtered out: nothing to link.
            Ok(()) | Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => {}
            Err(e) => tracing::debug!(error = %e, "could not link the job's span to its enqueue"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips() {
        let tp = TraceParent::parse(GOOD).unwrap();
        assert_eq!(tp.trace_id[0], 0x4b);
        assert_eq!(tp.span_id[7], 0xb7);
        assert_eq!(tp.to_string(), GOOD);
        // A later version may append fields; what we know is still read.
        assert!(TraceParent::parse(&format!("{}-extra", GOOD.replacen("00", "01", 1))).is_some());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00",
            &GOOD.to_uppercase(),
            &GOOD.replacen("00", "ff", 1),
            &format!("{GOOD}-extra"),
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
