//! Identity recorded at admission: the mutating webhook writes the authenticated user of a
//! CREATE into the identity annotations ([`crate::api::annotations`]). Pure: the JSONPatch is
//! computed from the object's annotations and the user; the shell sends it.
//!
//! Nothing is overwritten. A value the user typed stays as typed, even when it is not who they
//! are: the ValidatingAdmissionPolicy `yunzhang-identity` then refuses it, naming the annotation
//! and the authenticated user. Correcting it silently would hide a forgery attempt (or a
//! mistake) from the person who made it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::annotations::{
    APPROVER, APPROVER_GROUPS, EDITORS, REQUESTER, REQUESTER_GROUPS, groups_value, with_editor,
};

/// The kinds whose creator is recorded, by their plural resource name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedKind {
    /// `resourcerequests`: the requester.
    ResourceRequest,
    /// `approvals`: the approver.
    Approval,
    /// `migrationworkloads`: who registered the system (the operator requests its target
    /// resources on their behalf).
    MigrationWorkload,
}

impl RecordedKind {
    /// The kind of a plural resource name, if its creator is recorded.
    pub fn from_resource(resource: &str) -> Option<Self> {
        match resource {
            "resourcerequests" => Some(Self::ResourceRequest),
            "approvals" => Some(Self::Approval),
            "migrationworkloads" => Some(Self::MigrationWorkload),
            _ => None,
        }
    }

    /// The annotations holding the user name and the groups.
    pub fn annotations(self) -> (&'static str, &'static str) {
        match self {
            Self::ResourceRequest | Self::MigrationWorkload => (REQUESTER, REQUESTER_GROUPS),
            Self::Approval => (APPROVER, APPROVER_GROUPS),
        }
    }
}

/// The JSONPatch operations (as JSON) that record `user` and `groups` on a new object of `kind`
/// with the given `annotations`: each identity annotation that is absent is added; one that is
/// present is left alone. Empty when there is nothing to add.
pub fn identity_patch(
    kind: RecordedKind,
    annotations: Option<&BTreeMap<String, String>>,
    user: &str,
    groups: &[String],
) -> Vec<Value> {
    let (user_key, groups_key) = kind.annotations();
    let wanted = [
        (user_key, user.to_owned()),
        (groups_key, groups_value(groups)),
    ];
    match annotations {
        // No annotations at all: add the map with both (a JSONPatch `add` below a missing
        // parent fails).
        None => {
            let map: BTreeMap<&str, String> = wanted.into_iter().collect();
            vec![json!({"op": "add", "path": "/metadata/annotations", "value": map})]
        }
        Some(existing) => wanted
            .into_iter()
            .filter(|(key, _)| !existing.contains_key(*key))
            .map(|(key, value)| {
                json!({"op": "add", "path": format!("/metadata/annotations/{}", pointer_escape(key)), "value": value})
            })
            .collect(),
    }
}

/// The JSONPatch operations that add `user` to the editors of a request whose spec this UPDATE
/// changes ([`EDITORS`]): appended once, in the order of first change. Empty when the spec is
/// unchanged or `user` is already recorded.
pub fn editor_patch(
    spec_changed: bool,
    annotations: Option<&BTreeMap<String, String>>,
    user: &str,
) -> Vec<Value> {
    let Some(value) = with_editor(annotations, user).filter(|_| spec_changed) else {
        return Vec::new();
    };
    match annotations {
        None => {
            vec![json!({"op": "add", "path": "/metadata/annotations", "value": {EDITORS: value}})]
        }
        Some(_) => vec![
            json!({"op": "add", "path": format!("/metadata/annotations/{}", pointer_escape(EDITORS)), "value": value}),
        ],
    }
}

/// Escapes a JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
fn pointer_escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<String> {
        vec!["gx-finance-staff".into(), "system:authenticated".into()]
    }

    #[test]
    fn records_each_spec_editor_once_in_order() {
        assert!(
            editor_patch(false, None, "wang").is_empty(),
            "no spec change"
        );
        assert_eq!(
            editor_patch(true, None, "wang"),
            vec![
                json!({"op": "add", "path": "/metadata/annotations", "value": {"yunzhang.io/editors": "wang"}})
            ]
        );
        let once = BTreeMap::from([(EDITORS.to_owned(), "wang".to_owned())]);
        assert!(editor_patch(true, Some(&once), "wang").is_empty());
        assert_eq!(
            editor_patch(true, Some(&once), "li"),
            vec![
                json!({"op": "add", "path": "/metadata/annotations/yunzhang.io~1editors", "value": "wang,li"})
            ]
        );
    }

    #[test]
    fn records_requester_and_groups_on_an_object_without_annotations() {
        let ops = identity_patch(RecordedKind::ResourceRequest, None, "alice", &groups());
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/metadata/annotations", "value": {
                    "yunzhang.io/requester": "alice",
                    "yunzhang.io/requester-groups": "[\"gx-finance-staff\",\"system:authenticated\"]",
                }})
            ]
        );
    }

    #[test]
    fn adds_to_existing_annotations_with_escaped_keys() {
        let existing = BTreeMap::from([("team".to_owned(), "web".to_owned())]);
        let ops = identity_patch(RecordedKind::Approval, Some(&existing), "bob", &groups());
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/metadata/annotations/yunzhang.io~1approver", "value": "bob"}),
                json!({"op": "add", "path": "/metadata/annotations/yunzhang.io~1approver-groups", "value": "[\"gx-finance-staff\",\"system:authenticated\"]"}),
            ]
        );
    }

    #[test]
    fn leaves_a_typed_identity_as_typed_even_when_it_is_someone_else() {
        // The policy refuses "alice" for bob, naming the annotation; the webhook doesn't hide it.
        let existing = BTreeMap::from([(REQUESTER.to_owned(), "alice".to_owned())]);
        let ops = identity_patch(
            RecordedKind::ResourceRequest,
            Some(&existing),
            "bob",
            &groups(),
        );
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/metadata/annotations/yunzhang.io~1requester-groups", "value": "[\"gx-finance-staff\",\"system:authenticated\"]"})
            ]
        );
        let both = BTreeMap::from([
            (REQUESTER.to_owned(), "bob".to_owned()),
            (REQUESTER_GROUPS.to_owned(), "x".to_owned()),
        ]);
        assert!(
            identity_patch(RecordedKind::ResourceRequest, Some(&both), "bob", &groups()).is_empty()
        );
    }

    #[test]
    fn the_patch_applies_and_round_trips_through_parse_groups() {
        let mut object = json!({"metadata": {"name": "r", "annotations": {"a": "b"}}});
        let ops = identity_patch(
            RecordedKind::ResourceRequest,
            Some(&BTreeMap::from([("a".to_owned(), "b".to_owned())])),
            "alice",
            &groups(),
        );
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        let recorded = object["metadata"]["annotations"][REQUESTER_GROUPS]
            .as_str()
            .unwrap();
        assert_eq!(crate::api::annotations::parse_groups(recorded), groups());
        assert_eq!(object["metadata"]["annotations"][REQUESTER], "alice");
    }

    #[test]
    fn only_requests_approvals_and_workloads_are_recorded() {
        assert_eq!(
            RecordedKind::from_resource("resourcerequests"),
            Some(RecordedKind::ResourceRequest)
        );
        assert_eq!(
            RecordedKind::from_resource("approvals"),
            Some(RecordedKind::Approval)
        );
        assert_eq!(
            RecordedKind::from_resource("migrationworkloads").map(RecordedKind::annotations),
            Some((REQUESTER, REQUESTER_GROUPS))
        );
        assert_eq!(RecordedKind::from_resource("departments"), None);
    }
}
