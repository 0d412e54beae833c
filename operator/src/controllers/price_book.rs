//! The PriceBook shell: a book says in its status whether another book prices one of its SKUs at
//! the same time (condition `Ready`, reason `Overlap`, and a Warning Event when that starts).
//! Admission refuses such a book (`admission::price_book`); this is for the ones that get in
//! anyway (created at the same instant, or while no operator answered).

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use super::{
    Error, SharedContext, measured, publish_event,
    status::{apply_status, current_conditions},
};
use crate::{
    api::{CONDITION_READY, PriceBook},
    billing::{Overlap, find_overlaps},
    conditions::{self, condition},
};

/// The overlaps among `books` that involve book `name` (pure). A malformed book takes part in
/// none: the API server's validation refuses most, and it prices nothing.
pub fn overlaps_of<'a>(name: &str, books: impl IntoIterator<Item = &'a PriceBook>) -> Vec<Overlap> {
    let books: Vec<&PriceBook> = books.into_iter().collect();
    let well_formed = books.iter().filter(|b| {
        find_overlaps([(b.metadata.name.as_deref().unwrap_or_default(), &b.spec)]).is_ok()
    });
    find_overlaps(well_formed.map(|b| (b.metadata.name.as_deref().unwrap_or_default(), &b.spec)))
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.first == name || o.second == name)
        .collect()
}

pub async fn reconcile_price_book(
    book: Arc<PriceBook>,
    ctx: SharedContext,
) -> Result<Action, Error> {
    measured::<PriceBook>(&ctx.clone(), async move {
        let name = book.name_any();
        let generation = book.metadata.generation;
        let books = ctx.tenancy.price_books.state();
        let overlaps = overlaps_of(&name, books.iter().map(AsRef::as_ref));
        let (ready, reason, message) = match overlaps.as_slice() {
            [] => (true, "Consistent", "no other book prices its SKUs at the same time".to_owned()),
            all => (
                false,
                "Overlap",
                format!(
                    "{}; settlements leave those SKUs unpriced over the common range until one book ends where the other begins (spec.effectiveUntil) or is deleted",
                    all.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                ),
            ),
        };
        let existing = current_conditions(book.as_ref());
        let was_overlapping = existing
            .iter()
            .any(|c| c.type_ == CONDITION_READY && c.reason == "Overlap" && c.message == message);
        let merged = conditions::merge(
            existing,
            condition(CONDITION_READY, ready, reason, &message, generation, Timestamp::now()),
        );
        let status = json!({"observedGeneration": generation, "conditions": merged});
        if super::status::status_differs(book.status.as_ref(), &status) {
            apply_status(&ctx, book.as_ref(), status).await?;
        }
        if !ready && !was_overlapping {
            publish_event(&ctx, book.as_ref(), EventType::Warning, "Overlap", "CheckPrices", message)
                .await;
        }
        // Another book's change re-triggers this one (see wiring); a minute bounds any lag.
        Ok(Action::requeue(Duration::from_secs(60)))
    })
    .await
}
