use jobsmith::prelude::*;

#[job]
async fn send(user_id: u64, template: String, mailer: State<String>) {
    let _ = (user_id, template, mailer);
}

fn main() {
    let _ = send.delay("text".to_string(), "welcome".into());
    let _ = send.delay(7);
    let _ = send.schedule(in_minutes(1), 7, 8);
}
