//! What `#[derive(Event)]` and `#[job(on = ..)]` register: each event type
//! with its name, Rust type and location, and each handler's subscription in
//! its job's options.

use jobsmith::__private::{inventory, EventRegistration, Subscribe};
use jobsmith::prelude::*;
use jobsmith::Registry;
use serde::{Deserialize, Serialize};

/// A user signed up.
#[derive(Debug, Serialize, Deserialize, Event)]
#[event(name = "user.signed_up")]
pub struct UserSignedUp {
    user_id: u64,
}

/// An event through a re-export of the facade.
#[derive(Debug, Serialize, Deserialize, reexport::js::Event)]
#[event(crate = reexport::js, name = "billing.invoice-paid")]
pub struct InvoicePaid(u64);

mod reexport {
    pub(crate) use jobsmith as js;
}

struct Mailer;

#[job(on = UserSignedUp, queue = "email", retries = 1)]
async fn send_welcome(event: UserSignedUp, mailer: State<Mailer>) {
    let _ = (event.user_id, mailer);
}

#[job(on = "user.*", name = "audit_users")]
async fn audit(event: AnyEvent, ctx: JobContext) {
    let _ = (event, ctx);
}

#[job(on = InvoicePaid)]
async fn receipt(paid: InvoicePaid) {
    let _ = paid.0;
}

#[test]
fn handlers_carry_their_subscription() {
    let registry = Registry::global().unwrap();
    let welcome = registry.get("send_welcome").unwrap().options;
    assert_eq!(
        welcome.on,
        Some(Subscribe {
            pattern: "user.signed_up",
            any: false,
        })
    );
    assert_eq!(
        (welcome.queue, welcome.retries, welcome.cron),
        ("email", 1, None)
    );
    assert_eq!(
        registry.get("audit_users").unwrap().options.on,
        Some(Subscribe {
            pattern: "user.*",
            any: true,
        })
    );
    assert_eq!(
        registry.get("receipt").unwrap().options.on,
        Some(Subscribe {
            pattern: "billing.invoice-paid",
            any: false,
        })
    );
}

#[test]
fn derived_events_are_registered() {
    assert_eq!(UserSignedUp::NAME, "user.signed_up");
    let defs: Vec<_> = inventory::iter::<EventRegistration>
        .into_iter()
        .map(|registration| registration.0)
        .collect();
    let find = |name: &str| {
        let found: Vec<_> = defs.iter().filter(|def| def.name == name).collect();
        assert_eq!(found.len(), 1, "{name} in {defs:?}");
        found[0]
    };

    let signed_up = find("user.signed_up");
    assert_eq!(signed_up.rust_type, "UserSignedUp");
    assert!(
        signed_up.location.starts_with("events_registration (")
            && signed_up.location.contains("events_registration.rs:"),
        "{}",
        signed_up.location
    );

    let paid = find("billing.invoice-paid");
    assert_eq!(paid.rust_type, "InvoicePaid");
}
