use jobsmith::prelude::*;
use std::borrow::Cow;

#[job]
async fn greet<'a>(name: Cow<'a, str>) {
    let _ = name;
}

#[job]
async fn label(text: Cow<'static, str>, parts: Vec<Cow<'_, str>>) {
    let _ = (text, parts);
}

fn main() {}
