use jobsmith::prelude::*;

#[job]
fn send(user_id: u64) -> Result<(), String> {
    let _ = user_id;
    Ok(())
}

fn main() {
    // No cascade: the job type still exists.
    let _ = send.delay(1);
}
