//! The department tree (region → city → county → unit) and how quotas nest in it: a parent's
//! quotas cover its whole subtree, so a child's quotas must fit inside what the parent's quotas
//! leave after the parent's own requests and its other children's quotas.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;

use super::quota::{Amounts, Limits};

/// A CloudQuota as the hierarchy sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaInput {
    /// `namespace/name`.
    pub key: String,
    /// The Department whose namespace holds it.
    pub department: String,
    pub hard: Limits,
    /// Within its validity window now.
    pub in_window: bool,
}

/// Whether a quota counts.
#[derive(Clone, Debug, PartialEq)]
pub enum QuotaVerdict {
    /// Counts toward its department's capacity.
    Effective,
    /// Outside its validity window.
    OutOfWindow,
    /// Does not fit what the parent leaves; the message says by how much.
    ExceedsParent(String),
}

/// The departments in an order where every parent comes before its children; departments in a
/// cycle or under a missing parent are treated as roots (the caller reports them).
pub fn top_down(parents: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    let is_root = |name: &String| match parents.get(name).and_then(|p| p.as_ref()) {
        None => true,
        Some(p) => !parents.contains_key(p) || in_cycle(parents, name),
    };
    let mut frontier: Vec<String> = parents.keys().filter(|n| is_root(n)).cloned().collect();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for name in frontier {
            if placed.insert(name.clone()) {
                next.extend(
                    parents
                        .iter()
                        .filter(|(c, p)| {
                            p.as_deref() == Some(name.as_str()) && !placed.contains(*c)
                        })
                        .map(|(c, _)| c.clone()),
                );
                order.push(name);
            }
        }
        frontier = next;
    }
    order
}

/// Whether `name` is `ancestor` or below it (following parents; a cycle ends the walk).
pub fn within(parents: &BTreeMap<String, Option<String>>, name: &str, ancestor: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut at = Some(name.to_owned());
    while let Some(n) = at {
        if n == ancestor {
            return true;
        }
        if !seen.insert(n.clone()) {
            return false;
        }
        at = parents.get(&n).and_then(|p| p.clone());
    }
    false
}

/// Whether following parents from `name` comes back to it.
pub fn in_cycle(parents: &BTreeMap<String, Option<String>>, name: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut at = parents.get(name).and_then(|p| p.clone());
    while let Some(p) = at {
        if p == name {
            return true;
        }
        if !seen.insert(p.clone()) {
            return false;
        }
        at = parents.get(&p).and_then(|p| p.clone());
    }
    false
}

/// Judge every quota. `quotas` must be in creation order (earlier quotas keep their place when
/// a later one would not fit); `held` is what each department's own requests hold.
pub fn judge_quotas(
    parents: &BTreeMap<String, Option<String>>,
    quotas: &[QuotaInput],
    held: &BTreeMap<String, Amounts>,
) -> BTreeMap<String, QuotaVerdict> {
    let mut verdicts = BTreeMap::new();
    // What each department's effective quotas add up to, filled level by level.
    let mut capacity: BTreeMap<String, Limits> = BTreeMap::new();
    // What a parent has handed to children so far.
    let mut delegated: BTreeMap<String, Amounts> = BTreeMap::new();
    // Depth in the tree; siblings are judged together, in the quotas' creation order.
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    for dept in top_down(parents) {
        let d = parents
            .get(&dept)
            .and_then(|p| p.as_ref())
            .and_then(|p| depth.get(p))
            .map_or(0, |d| d + 1);
        depth.insert(dept, d);
    }
    let max_depth = depth.values().copied().max().unwrap_or(0);
    for level in 0..=max_depth {
        for q in quotas
            .iter()
            .filter(|q| depth.get(&q.department) == Some(&level))
        {
            if !q.in_window {
                verdicts.insert(q.key.clone(), QuotaVerdict::OutOfWindow);
                continue;
            }
            let parent = parents
                .get(&q.department)
                .and_then(|p| p.clone())
                .filter(|p| capacity.contains_key(p));
            let verdict = match &parent {
                None => QuotaVerdict::Effective,
                Some(p) => {
                    let p_cap = &capacity[p];
                    let p_used = held
                        .get(p)
                        .cloned()
                        .unwrap_or_default()
                        .plus(&delegated.get(p).cloned().unwrap_or_default());
                    let left = p_cap.remaining(&p_used);
                    match left
                        .dimensions()
                        .find(|(d, avail)| q.hard.get(*d).is_some_and(|want| want > *avail))
                    {
                        Some((d, avail)) => QuotaVerdict::ExceedsParent(format!(
                            "quota {}: {d} {} exceeds what parent {p}'s quotas leave: {} of {}",
                            q.key,
                            q.hard.get(d).unwrap_or_default().normalize(),
                            avail.max(Decimal::ZERO).normalize(),
                            p_cap.get(d).unwrap_or_default().normalize()
                        )),
                        None => QuotaVerdict::Effective,
                    }
                }
            };
            if let (QuotaVerdict::Effective, Some(p)) = (&verdict, &parent) {
                {
                    let entry = delegated.entry(p.clone()).or_default();
                    for (d, v) in q.hard.dimensions() {
                        entry.add(d, v);
                    }
                }
            }
            verdicts.insert(q.key.clone(), verdict);
        }
        for dept in depth.iter().filter(|(_, d)| **d == level).map(|(n, _)| n) {
            let effective: Vec<&Limits> = quotas
                .iter()
                .filter(|q| {
                    &q.department == dept && verdicts.get(&q.key) == Some(&QuotaVerdict::Effective)
                })
                .map(|q| &q.hard)
                .collect();
            if !effective.is_empty() {
                capacity.insert(dept.clone(), Limits::sum(effective));
            }
        }
    }
    verdicts
}

/// What a department's own requests may use: its effective quotas minus what its children's
/// effective quotas take. `None` when it has no effective quota (no capacity at all).
pub fn own_capacity(
    dept: &str,
    parents: &BTreeMap<String, Option<String>>,
    quotas: &[QuotaInput],
    verdicts: &BTreeMap<String, QuotaVerdict>,
) -> Option<(Vec<String>, Limits)> {
    let effective = |q: &&QuotaInput| verdicts.get(&q.key) == Some(&QuotaVerdict::Effective);
    let own: Vec<&QuotaInput> = quotas
        .iter()
        .filter(|q| q.department == dept)
        .filter(effective)
        .collect();
    if own.is_empty() {
        return None;
    }
    let total = Limits::sum(own.iter().map(|q| &q.hard));
    let mut children = Amounts::default();
    for q in quotas
        .iter()
        .filter(effective)
        .filter(|q| parents.get(&q.department).and_then(|p| p.as_deref()) == Some(dept))
    {
        for (d, v) in q.hard.dimensions() {
            // Only dimensions the parent limits are carved out of it.
            if total.get(d).is_some() {
                children.add(d, v);
            }
        }
    }
    let limits = total.remaining(&children);
    Some((own.iter().map(|q| q.key.clone()).collect(), limits))
}

/// Sum each department's `own` figures (quota amounts, migration counts, spend) up the tree:
/// each department's subtree total.
pub fn roll_up<T: Clone + Default + std::ops::Add<Output = T>>(
    parents: &BTreeMap<String, Option<String>>,
    own: &BTreeMap<String, T>,
) -> BTreeMap<String, T> {
    let mut total: BTreeMap<String, T> = BTreeMap::new();
    for dept in top_down(parents).into_iter().rev() {
        let children = parents
            .iter()
            .filter(|(c, p)| p.as_deref() == Some(dept.as_str()) && !in_cycle(parents, c))
            .fold(T::default(), |acc, (c, _)| {
                acc + total.get(c).cloned().unwrap_or_default()
            });
        let mine = own.get(&dept).cloned().unwrap_or_default();
        total.insert(dept, mine + children);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::cloud_quota::QuotaLimits as ApiLimits, tenancy::quota::Dimension};

    fn tree() -> BTreeMap<String, Option<String>> {
        [
            ("gx", None),
            ("nanning", Some("gx")),
            ("finance", Some("gx")),
            ("school", Some("nanning")),
        ]
        .into_iter()
        .map(|(c, p)| (c.to_owned(), p.map(str::to_owned)))
        .collect()
    }

    fn q(key: &str, dept: &str, vcpu: u64) -> QuotaInput {
        QuotaInput {
            key: key.into(),
            department: dept.into(),
            hard: Limits::from_api(&ApiLimits {
                vcpu: Some(vcpu),
                ..Default::default()
            }),
            in_window: true,
        }
    }

    fn vcpu(n: i64) -> Amounts {
        let mut a = Amounts::default();
        a.add(Dimension::Vcpu, Decimal::from(n));
        a
    }

    #[test]
    fn parents_come_first() {
        let order = top_down(&tree());
        let pos = |n: &str| order.iter().position(|x| x == n).expect("placed");
        assert!(
            pos("gx") < pos("nanning")
                && pos("nanning") < pos("school")
                && pos("gx") < pos("finance")
        );
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn child_larger_than_parent_remainder_is_refused_with_message() {
        let quotas = [
            q("gx/base", "gx", 100),
            q("nanning/base", "nanning", 60),
            q("finance/base", "finance", 50),
        ];
        let verdicts = judge_quotas(
            &tree(),
            &quotas,
            &BTreeMap::from([("gx".to_owned(), vcpu(0))]),
        );
        assert_eq!(verdicts["nanning/base"], QuotaVerdict::Effective);
        assert_eq!(
            verdicts["finance/base"],
            QuotaVerdict::ExceedsParent(
                "quota finance/base: vcpu 50 exceeds what parent gx's quotas leave: 40 of 100"
                    .into()
            )
        );
    }

    #[test]
    fn parents_own_use_counts_against_children() {
        let quotas = [q("gx/base", "gx", 100), q("nanning/base", "nanning", 60)];
        let verdicts = judge_quotas(
            &tree(),
            &quotas,
            &BTreeMap::from([("gx".to_owned(), vcpu(50))]),
        );
        assert!(
            matches!(&verdicts["nanning/base"], QuotaVerdict::ExceedsParent(m) if m.contains("leave: 50 of 100"))
        );
    }

    #[test]
    fn grandchildren_nest_in_children() {
        let quotas = [
            q("gx/base", "gx", 100),
            q("nanning/base", "nanning", 60),
            q("school/base", "school", 70),
        ];
        let verdicts = judge_quotas(&tree(), &quotas, &BTreeMap::new());
        assert!(
            matches!(&verdicts["school/base"], QuotaVerdict::ExceedsParent(m) if m.contains("parent nanning's"))
        );
    }

    #[test]
    fn own_capacity_excludes_what_children_hold() {
        let quotas = [q("gx/base", "gx", 100), q("nanning/base", "nanning", 60)];
        let verdicts = judge_quotas(&tree(), &quotas, &BTreeMap::new());
        let (names, limits) = own_capacity("gx", &tree(), &quotas, &verdicts).expect("capacity");
        assert_eq!(names, ["gx/base"]);
        assert_eq!(limits.get(Dimension::Vcpu), Some(Decimal::from(40)));
        assert!(own_capacity("finance", &tree(), &quotas, &verdicts).is_none());
    }

    #[test]
    fn out_of_window_quotas_do_not_count() {
        let mut expired = q("gx/old", "gx", 100);
        expired.in_window = false;
        let verdicts = judge_quotas(&tree(), &[expired.clone()], &BTreeMap::new());
        assert_eq!(verdicts["gx/old"], QuotaVerdict::OutOfWindow);
        assert!(own_capacity("gx", &tree(), &[expired], &verdicts).is_none());
    }

    #[test]
    fn cycles_do_not_hang() {
        let parents: BTreeMap<_, _> = [("a", Some("b")), ("b", Some("a"))]
            .into_iter()
            .map(|(c, p)| (c.to_owned(), p.map(str::to_owned)))
            .collect();
        assert!(in_cycle(&parents, "a"));
        assert_eq!(top_down(&parents).len(), 2);
        let _ = roll_up(&parents, &BTreeMap::<String, Amounts>::new());
    }

    #[test]
    fn usage_rolls_up() {
        let own = BTreeMap::from([
            ("gx".to_owned(), vcpu(1)),
            ("nanning".to_owned(), vcpu(2)),
            ("school".to_owned(), vcpu(4)),
            ("finance".to_owned(), vcpu(8)),
        ]);
        let total = roll_up(&tree(), &own);
        assert_eq!(total["school"], vcpu(4));
        assert_eq!(total["nanning"], vcpu(6));
        assert_eq!(total["gx"], vcpu(15));
    }
}
