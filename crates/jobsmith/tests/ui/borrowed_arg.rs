use jobsmith::prelude::*;

#[job]
async fn greet(name: &str, tags: &[String], ctx: &JobContext) {
    let _ = (name, tags, ctx);
}

fn main() {
    let _ = greet.delay("ada", &[]);
}
