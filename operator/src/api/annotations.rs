//! Annotations that carry identity recorded at admission. They are written by the operator's
//! mutating admission webhook from the authenticated user of the API request (never from what
//! the user typed), and a ValidatingAdmissionPolicy refuses any value that differs from the
//! authenticated user, and any change after creation.

/// On a ResourceRequest: the user who created it.
pub const REQUESTER: &str = "yunzhang.io/requester";
/// On a ResourceRequest: the creating user's groups, comma-separated, in the API server's order.
pub const REQUESTER_GROUPS: &str = "yunzhang.io/requester-groups";
/// On an Approval: the user who created it (the approver).
pub const APPROVER: &str = "yunzhang.io/approver";
/// On an Approval: the approver's groups, comma-separated, in the API server's order.
pub const APPROVER_GROUPS: &str = "yunzhang.io/approver-groups";

/// Splits a groups annotation value.
pub fn split_groups(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}
