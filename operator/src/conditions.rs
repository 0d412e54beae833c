//! Conditions are computed, then merged into what the object already has: a condition's
//! `lastTransitionTime` moves only when its status changes.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// Build a condition stamped with `now`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Merge `new` into `existing`, keyed by type; keeps the old transition time when the status is
/// unchanged, and keeps the list sorted by type so the written status is deterministic.
pub fn merge(mut existing: Vec<Condition>, new: Condition) -> Vec<Condition> {
    match existing.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let since = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *old = Condition {
                last_transition_time: since,
                ..new
            };
        }
        None => existing.push(new),
    }
    existing.sort_by(|a, b| a.type_.cmp(&b.type_));
    existing
}

/// Whether `conditions` holds a condition of this type with status True for this generation.
pub fn is_true_for(conditions: &[Condition], type_: &str, generation: Option<i64>) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True" && c.observed_generation == generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let first = merge(
            vec![],
            condition("Ready", true, "Reconciled", "ok", Some(1), at(100)),
        );
        let second = merge(
            first,
            condition("Ready", true, "Reconciled", "still ok", Some(2), at(200)),
        );
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].last_transition_time, Time(at(100)));
        assert_eq!(second[0].message, "still ok");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let first = merge(
            vec![],
            condition("Ready", true, "Reconciled", "ok", Some(1), at(100)),
        );
        let second = merge(
            first,
            condition("Ready", false, "Failed", "broken", Some(1), at(200)),
        );
        assert_eq!(second[0].last_transition_time, Time(at(200)));
        assert_eq!(second[0].status, "False");
    }

    #[test]
    fn other_types_are_kept_and_sorted() {
        let merged = merge(
            vec![condition("Ready", true, "R", "", Some(1), at(1))],
            condition("Drifted", false, "InSync", "", Some(1), at(2)),
        );
        let types: Vec<_> = merged.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Drifted", "Ready"]);
    }

    #[test]
    fn is_true_for_checks_generation() {
        let conds = vec![condition("Ready", true, "R", "", Some(3), at(1))];
        assert!(is_true_for(&conds, "Ready", Some(3)));
        assert!(!is_true_for(&conds, "Ready", Some(4)));
        assert!(!is_true_for(&conds, "Drifted", Some(3)));
    }
}
