//! Annotations that carry identity recorded at admission. They are written by the operator's
//! mutating admission webhook from the authenticated user of the API request (never from what
//! the user typed), and a ValidatingAdmissionPolicy refuses any value that differs from the
//! authenticated user, and any change after creation.

/// On a ResourceRequest: the user who created it.
pub const REQUESTER: &str = "yunzhang.io/requester";
/// On a ResourceRequest: the creating user's groups, a JSON array in the API server's order.
pub const REQUESTER_GROUPS: &str = "yunzhang.io/requester-groups";
/// On an Approval: the user who created it (the approver).
pub const APPROVER: &str = "yunzhang.io/approver";
/// On an Approval: the approver's groups, a JSON array in the API server's order.
pub const APPROVER_GROUPS: &str = "yunzhang.io/approver-groups";

/// A groups annotation value: the groups as a JSON array, so no group name can read back as
/// two (a group `x,security-office` stays one group). The ValidatingAdmissionPolicies build the
/// same text from `request.userInfo.groups`.
pub fn groups_value(groups: &[String]) -> String {
    serde_json::to_string(groups).unwrap_or_else(|_| "[]".to_owned())
}

/// The groups of a groups annotation value ([`groups_value`]); none when it is not a JSON
/// array of strings (fewer groups never grant more).
pub fn parse_groups(value: &str) -> Vec<String> {
    serde_json::from_str(value).unwrap_or_default()
}

/// On a ResourceRequest the operator creates for a MigrationWorkload: the user who created the
/// workload (its own `yunzhang.io/requester`), on whose behalf the operator asks. Only the
/// operator's ServiceAccount may set it (ValidatingAdmissionPolicy `yunzhang-on-behalf-of`), and
/// it never changes; approvals judge four eyes against this user instead of the operator.
pub const ON_BEHALF_OF: &str = "yunzhang.io/on-behalf-of";
/// The groups of [`ON_BEHALF_OF`], as recorded on the workload.
pub const ON_BEHALF_OF_GROUPS: &str = "yunzhang.io/on-behalf-of-groups";

/// Who a request is for, as recorded at admission: the workload creator named in
/// [`ON_BEHALF_OF`] when the operator created it for a MigrationWorkload, otherwise its
/// [`REQUESTER`]. `None` when nothing was recorded. Returns (user, groups).
pub fn effective_requester(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<(String, Vec<String>)> {
    let (user, groups) = match annotations.get(ON_BEHALF_OF) {
        Some(user) => (user, annotations.get(ON_BEHALF_OF_GROUPS)),
        None => (
            annotations.get(REQUESTER)?,
            annotations.get(REQUESTER_GROUPS),
        ),
    };
    Some((
        user.clone(),
        groups.map(|g| parse_groups(g)).unwrap_or_default(),
    ))
}

/// On a ResourceRequest: the users who changed its spec after it was created, comma-joined in
/// the order of their first change, each once. Written by the mutating webhook from the
/// authenticated user of each UPDATE that changes the spec; the ValidatingAdmissionPolicy
/// `yunzhang-editors` refuses any other value. They count as requesters for four eyes. (A user
/// name with a comma reads back as two editors: that only bars more people from approving.)
pub const EDITORS: &str = "yunzhang.io/editors";

/// The editors recorded in `annotations` ([`EDITORS`]).
pub fn editors(annotations: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    annotations
        .get(EDITORS)
        .map(|v| {
            v.split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The editors value once `user` changed the spec: `user` appended to `annotations`' editors,
/// unless already there (`None`: nothing to record). What policy `yunzhang-editors` requires.
pub fn with_editor(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    user: &str,
) -> Option<String> {
    let mut recorded = annotations.map(editors).unwrap_or_default();
    if recorded.iter().any(|e| e == user) {
        return None;
    }
    recorded.push(user.to_owned());
    Some(recorded.join(","))
}

/// On a ResourceRequest: the platform admin who forced it out of a stuck exit (`kubectl yunzhang
/// force-exit`). The ValidatingAdmissionPolicy `yunzhang-force-exit` admits it only as the
/// authenticated user, holding the `force-exit` verb on resourcerequests, and never changed.
pub const FORCE_EXIT_BY: &str = "yunzhang.io/force-exit-by";
/// On a ResourceRequest: why it was forced out (set with [`FORCE_EXIT_BY`]).
pub const FORCE_EXIT_REASON: &str = "yunzhang.io/force-exit-reason";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_workload_creator_is_the_requester_of_a_request_made_on_their_behalf() {
        let mut a = BTreeMap::from([
            (
                REQUESTER.to_owned(),
                "system:serviceaccount:yunzhang-system:yunzhang".to_owned(),
            ),
            (
                REQUESTER_GROUPS.to_owned(),
                "system:serviceaccounts".to_owned(),
            ),
        ]);
        assert_eq!(
            effective_requester(&a).map(|r| r.0),
            Some("system:serviceaccount:yunzhang-system:yunzhang".to_owned())
        );
        a.insert(ON_BEHALF_OF.to_owned(), "alice".to_owned());
        a.insert(
            ON_BEHALF_OF_GROUPS.to_owned(),
            r#"["staff","system:authenticated"]"#.to_owned(),
        );
        assert_eq!(
            effective_requester(&a),
            Some((
                "alice".to_owned(),
                vec!["staff".to_owned(), "system:authenticated".to_owned()]
            ))
        );
        assert_eq!(effective_requester(&BTreeMap::new()), None);
    }

    #[test]
    fn a_group_with_a_comma_reads_back_as_one_group() {
        let groups = vec!["x,security-office".to_owned(), "a\"b".to_owned()];
        let value = groups_value(&groups);
        assert_eq!(value, r#"["x,security-office","a\"b"]"#);
        assert_eq!(parse_groups(&value), groups);
        assert_eq!(parse_groups("x,security-office"), Vec::<String>::new());
    }
}
