//! Two jobs registered under one name: the worker refuses to start, naming both.

use jobsmith::prelude::*;

mod billing {
    use jobsmith::prelude::*;
    #[job(name = "charge")]
    pub(crate) async fn charge_card(cents: u64) {
        let _ = cents;
    }
}

#[job(name = "charge")]
async fn charge_invoice(invoice: String) {
    let _ = invoice;
}

#[tokio::test]
async fn duplicate_job_names_are_an_error_naming_both() {
    let _ = (billing::charge_card, charge_invoice);
    let err = App::memory().worker().until_idle().run().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("two jobs are registered as `charge`"),
        "{text}"
    );
    assert!(
        text.contains("duplicate_names::billing") && text.contains("duplicate_names ("),
        "{text}"
    );
    assert!(text.contains("#[job(name = "), "says how to fix it: {text}");
}
