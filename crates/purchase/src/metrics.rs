//! What the purchase workflow counts (the `metrics` facade): the calls that spend money.
//! `sent` counts every checkout (E13) and direct order (E21) request that reached Partner
//! Center, retries of the same request id included; `confirmed` counts the replies that proved one processed (2xx). A
//! difference that stays is the checkouts whose replies were lost or refused: the purchases
//! then find out from the order list, or park for an operator.

use metrics::{counter, describe_counter};

use crate::call::Call;

pub const CHECKOUTS_SENT: &str = "pcsaga_checkouts_sent_total";
pub const CHECKOUTS_CONFIRMED: &str = "pcsaga_checkouts_confirmed_total";

/// Describes the workflow's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        CHECKOUTS_SENT,
        "Checkouts (path cart) and direct orders (path direct) sent, retries included."
    );
    describe_counter!(
        CHECKOUTS_CONFIRMED,
        "Checkouts and direct orders whose reply proved them processed, by path."
    );
}

/// The purchase path of a money-spending call, `None` for every other call.
fn path_of(call: &Call) -> Option<&'static str> {
    match call {
        Call::Checkout { .. } => Some("cart"),
        Call::CreateOrder { .. } => Some("direct"),
        _ => None,
    }
}

/// A money-spending call was made: counted as sent when it reached Partner Center (a reply
/// came, or its reply was lost after sending); not when the connection could not be made.
pub(crate) fn sent(call: &Call, attempt: &pcsaga_engine::AttemptRecord, confirmed: bool) {
    let reached =
        attempt.http_status.is_some() || attempt.error_class.as_deref() == Some("outcome_unknown");
    if let (Some(path), true) = (path_of(call), reached) {
        counter!(CHECKOUTS_SENT, "path" => path).increment(1);
        if confirmed {
            counter!(CHECKOUTS_CONFIRMED, "path" => path).increment(1);
        }
    }
}
