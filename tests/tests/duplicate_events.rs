//! Two event types declared with one name: the worker refuses to start,
//! naming both types and where each is defined, and so does a publisher
//! registering its handlers.

use jobsmith::prelude::*;
use serde::{Deserialize, Serialize};

mod billing {
    use jobsmith::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Event)]
    #[event(name = "account.opened")]
    pub(crate) struct AccountOpened {
        pub(crate) plan: String,
    }
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "account.opened")]
struct Opened {
    user_id: u64,
}

#[job(on = Opened)]
async fn welcome(e: Opened) {
    let _ = e.user_id;
}

#[tokio::test]
async fn two_event_types_with_one_name_are_an_error_naming_both() {
    let _ = billing::AccountOpened { plan: "pro".into() }.plan;
    let check = |text: String| {
        assert!(
            text.contains("two event types are declared as `account.opened`"),
            "{text}"
        );
        assert!(
            text.contains("`AccountOpened` at duplicate_events::billing")
                && text.contains("`Opened` at duplicate_events ("),
            "names both types and where: {text}"
        );
        assert!(
            text.contains("#[event(name = "),
            "says how to fix it: {text}"
        );
    };
    let app = App::memory();
    check(
        app.worker()
            .until_idle()
            .run()
            .await
            .unwrap_err()
            .to_string(),
    );
    check(app.register_subscriptions().await.unwrap_err().to_string());
}
