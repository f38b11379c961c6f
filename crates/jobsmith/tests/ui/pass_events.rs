//! Event types and their handlers compile, and register their subscriptions.
use jobsmith::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "user.signed_up")]
struct UserSignedUp {
    user_id: u64,
}

struct Mailer;

#[job(on = UserSignedUp, queue = "email")]
async fn send_welcome(event: UserSignedUp, mailer: State<Mailer>) {
    let _ = (event.user_id, mailer);
}

#[job(on = "user.#")]
async fn audit(event: AnyEvent, mailer: State<Mailer>, ctx: JobContext) -> Result<(), String> {
    let _ = (event.name, event.payload, mailer, ctx);
    Ok(())
}

/// Through a re-export of the facade, with `crate = ...` on both.
mod reexport {
    pub(crate) use jobsmith as js;
}

#[derive(Serialize, Deserialize, reexport::js::Event)]
#[event(name = "billing.paid", crate = reexport::js)]
struct Paid(u64);

#[jobsmith::job(on = Paid, crate = reexport::js)]
async fn receipt(paid: Paid) {
    let _ = paid.0;
}

fn main() {
    // The facade does not re-export `Subscribe` (yet); the runtime's copy will do.
    use jobsmith::{__private::Subscribe, Job as _};
    assert_eq!(
        send_welcome::DEF.options.on,
        Some(Subscribe { pattern: "user.signed_up", any: false })
    );
    assert_eq!(audit::DEF.options.on, Some(Subscribe { pattern: "user.#", any: true }));
    assert_eq!(receipt::DEF.options.on.map(|on| on.pattern), Some(Paid::NAME));
}
