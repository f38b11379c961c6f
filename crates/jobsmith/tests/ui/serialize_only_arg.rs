use jobsmith::prelude::*;

// Serializable but not deserializable: one error, as for neither.
#[derive(serde::Serialize)]
struct Report {
    title: String,
}

#[job]
async fn publish(report: Report) {
    let _ = report;
}

fn main() {}
