//! Placement: the scheduler's pure decision, from what etcd holds to the
//! assignments to write. No I/O; unit-tested here.

use std::collections::{BTreeMap, BTreeSet};

use crate::keys::{NodeRecord, Want};

/// What one instance of a feature takes from a node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Need {
    /// Memory limit, bytes.
    pub memory: u64,
    /// Process limit.
    pub pids: u64,
    /// Named ports.
    pub ports: u32,
}

/// A node as the scheduler sees it in one pass.
#[derive(Debug, Clone)]
pub(crate) struct Node<'a> {
    pub record: &'a NodeRecord,
    pub draining: bool,
}

/// One change of assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The instance.
    pub name: String,
    /// The node it was on, if any.
    pub from: Option<String>,
    /// The node it goes to; `None`: the assignment is dropped (the instance
    /// is no longer wanted, no node fits it, or it leaves a draining node
    /// and is placed once that node no longer reports it).
    pub to: Option<String>,
    /// What must still hold when the move is written.
    pub guard: Guard,
}

/// The condition a move was planned under, checked again in its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// Nothing beyond the assignment's revision.
    None,
    /// Off a lost node: the node has not registered again meanwhile.
    NodeGone(String),
    /// Off a draining node: the drain mark is still there.
    Draining(String),
}

#[derive(Default, Clone, Copy)]
struct Used {
    count: u32,
    memory: u64,
    pids: u64,
    /// Ports of the instances placed in this pass (a node's `ports_free`
    /// already leaves out those it runs).
    new_ports: u32,
}

/// The moves that make `current` a good placement of `wants`:
///
/// - an instance stays where it is while its node is registered and not
///   draining, or unregistered but not yet `lost` (its grace runs);
/// - one on a lost node moves to the best node at once (the lost node
///   fenced itself before its lease expired);
/// - one on a draining node is unassigned when another node could take it,
///   and placed once the draining node no longer reports it: a live node's
///   copy is gone before another starts;
/// - a new or unassigned one is placed once no registered node reports it;
/// - the best node holds every one of the instance's `on` labels, has room
///   (instances, memory, pids, free ports), and runs the fewest instances of
///   the same feature, then the fewest in all, then comes first by name;
/// - one with no such node: from a lost node it is dropped (shown pending),
///   on a draining node it stays;
/// - an assignment whose instance is no longer wanted is dropped.
///
/// `reported` is, per instance, the registered nodes that report a copy.
pub(crate) fn plan(
    nodes: &BTreeMap<String, Node<'_>>,
    wants: &BTreeMap<String, Want>,
    current: &BTreeMap<String, String>,
    lost: &BTreeSet<String>,
    reported: &BTreeMap<String, BTreeSet<String>>,
    need: &dyn Fn(&str) -> Need,
) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut used: BTreeMap<&str, Used> = BTreeMap::new();
    let mut same: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut place: Vec<(&Want, Option<&String>)> = Vec::new();
    for (name, node) in current {
        if !wants.contains_key(name) {
            moves.push(Move {
                name: name.clone(),
                from: Some(node.clone()),
                to: None,
                guard: Guard::None,
            });
        }
    }
    for (name, w) in wants {
        match current.get(name) {
            Some(n) => {
                let stays = match nodes.get(n) {
                    Some(node) => !node.draining,
                    None => !lost.contains(n),
                };
                if stays {
                    take(&mut used, &mut same, n, &w.feature, need(&w.feature), false);
                } else {
                    place.push((w, Some(n)));
                }
            }
            None => {
                let copies = reported.get(name).is_some_and(|r| !r.is_empty());
                if !copies {
                    place.push((w, None));
                }
            }
        }
    }
    for (w, from) in place {
        let n = need(&w.feature);
        let best = nodes
            .iter()
            .filter(|(_, node)| !node.draining)
            .filter(|(_, node)| {
                w.on.iter()
                    .all(|(k, v)| node.record.labels.get(k) == Some(v))
            })
            .filter(|(name, node)| fits(node.record, used.get(name.as_str()), n))
            .min_by_key(|(name, _)| {
                let u = used.get(name.as_str()).copied().unwrap_or_default();
                let s = same
                    .get(&(name.as_str(), w.feature.as_str()))
                    .copied()
                    .unwrap_or(0);
                (s, u.count, name.as_str())
            })
            .map(|(name, _)| name.as_str());
        let draining_from = from.filter(|f| nodes.contains_key(*f));
        match (best, from, draining_from) {
            // Off a draining node: first unassigned; placed when it is gone.
            (Some(_), _, Some(f)) => moves.push(Move {
                name: w.name.clone(),
                from: Some(f.clone()),
                to: None,
                guard: Guard::Draining(f.clone()),
            }),
            (Some(to), from, None) => {
                take(&mut used, &mut same, to, &w.feature, n, true);
                moves.push(Move {
                    name: w.name.clone(),
                    from: from.cloned(),
                    to: Some(to.to_string()),
                    guard: match from {
                        Some(f) => Guard::NodeGone(f.clone()),
                        None => Guard::None,
                    },
                });
            }
            // A draining node keeps what cannot go anywhere else.
            (None, _, Some(f)) => {
                take(&mut used, &mut same, f, &w.feature, n, false);
            }
            (None, Some(f), None) => moves.push(Move {
                name: w.name.clone(),
                from: Some(f.clone()),
                to: None,
                guard: Guard::NodeGone(f.clone()),
            }),
            (None, None, None) => {}
        }
    }
    moves
}

fn take<'a>(
    used: &mut BTreeMap<&'a str, Used>,
    same: &mut BTreeMap<(&'a str, &'a str), u32>,
    node: &'a str,
    feature: &'a str,
    n: Need,
    new: bool,
) {
    let u = used.entry(node).or_default();
    u.count += 1;
    u.memory += n.memory;
    u.pids += n.pids;
    if new {
        u.new_ports += n.ports;
    }
    *same.entry((node, feature)).or_default() += 1;
}

/// Has the node room for one more instance needing `n`?
fn fits(r: &NodeRecord, u: Option<&Used>, n: Need) -> bool {
    let u = u.copied().unwrap_or_default();
    r.max_instances.is_none_or(|m| u.count < m)
        && r.memory.is_none_or(|m| u.memory + n.memory <= m)
        && r.pids.is_none_or(|m| u.pids + n.pids <= m)
        && u.new_ports + n.ports <= r.ports_free
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, labels: &[(&str, &str)]) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            max_instances: None,
            memory: None,
            pids: None,
            ports_free: 1000,
            since_ms: 0,
            version: String::new(),
        }
    }

    fn want(name: &str, feature: &str, on: &[(&str, &str)]) -> (String, Want) {
        (
            name.to_string(),
            Want {
                name: name.into(),
                feature: feature.into(),
                mode: None,
                options: Default::default(),
                on: on
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                created_ms: 0,
            },
        )
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ONE_PORT: Need = Need {
        memory: 64 << 20,
        pids: 16,
        ports: 1,
    };

    /// `plan` over `recs` (those named in `draining` draining), one port each.
    fn run(
        recs: &[NodeRecord],
        draining: &[&str],
        wants: &BTreeMap<String, Want>,
        cur: &BTreeMap<String, String>,
        lost: &[&str],
        reported: &[(&str, &str)],
    ) -> Vec<Move> {
        let nodes: BTreeMap<String, Node<'_>> = recs
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    Node {
                        record: r,
                        draining: draining.contains(&r.name.as_str()),
                    },
                )
            })
            .collect();
        let lost: BTreeSet<String> = lost.iter().map(|s| s.to_string()).collect();
        let mut rep: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, node) in reported {
            rep.entry(name.to_string())
                .or_default()
                .insert(node.to_string());
        }
        plan(&nodes, wants, cur, &lost, &rep, &|_| ONE_PORT)
    }

    fn apply(current: &mut BTreeMap<String, String>, moves: &[Move]) {
        for m in moves {
            match &m.to {
                Some(t) => current.insert(m.name.clone(), t.clone()),
                None => current.remove(&m.name),
            };
        }
    }

    #[test]
    fn thirty_instances_spread_evenly_over_three_nodes() {
        let recs = [rec("a", &[]), rec("b", &[]), rec("c", &[])];
        let wants: BTreeMap<_, _> = (0..30)
            .map(|i| want(&format!("d{i:02}"), "demo", &[]))
            .collect();
        let mut cur = BTreeMap::new();
        let moves = run(&recs, &[], &wants, &cur, &[], &[]);
        apply(&mut cur, &moves);
        for n in ["a", "b", "c"] {
            assert_eq!(cur.values().filter(|v| *v == n).count(), 10, "{cur:?}");
        }
        // A second pass changes nothing.
        let again = run(&recs, &[], &wants, &cur, &[], &[]);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn same_feature_spreads_before_totals_balance() {
        let recs = [rec("a", &[]), rec("b", &[])];
        let mut cur = map(&[("x1", "a"), ("x2", "a")]);
        let mut wants: BTreeMap<_, _> = [want("x1", "other", &[]), want("x2", "other", &[])].into();
        wants.extend([want("r1", "redis", &[]), want("r2", "redis", &[])]);
        let moves = run(&recs, &[], &wants, &cur, &[], &[]);
        apply(&mut cur, &moves);
        assert_ne!(cur["r1"], cur["r2"], "{cur:?}");
    }

    #[test]
    fn labels_constrain_and_nothing_fitting_leaves_it_pending() {
        let recs = [rec("a", &[("zone", "x")]), rec("b", &[("zone", "y")])];
        let wants: BTreeMap<_, _> = [
            want("p", "demo", &[("zone", "y")]),
            want("q", "demo", &[("zone", "z")]),
        ]
        .into();
        let moves = run(&recs, &[], &wants, &BTreeMap::new(), &[], &[]);
        assert_eq!(
            moves,
            vec![Move {
                name: "p".into(),
                from: None,
                to: Some("b".into()),
                guard: Guard::None,
            }]
        );
    }

    #[test]
    fn capacity_memory_pids_and_ports_are_respected() {
        let mut a = rec("a", &[]);
        a.max_instances = Some(2);
        let mut b = rec("b", &[]);
        b.memory = Some(3 * (64 << 20));
        let mut c = rec("c", &[]);
        c.ports_free = 0;
        let mut d = rec("d", &[]);
        // Two free ports: the pass's own placements count against them.
        d.ports_free = 2;
        let recs = [a, b, c, d];
        let wants: BTreeMap<_, _> = (0..10)
            .map(|i| want(&format!("w{i}"), "demo", &[]))
            .collect();
        let mut cur = BTreeMap::new();
        let moves = run(&recs, &[], &wants, &cur, &[], &[]);
        apply(&mut cur, &moves);
        assert_eq!(cur.values().filter(|v| *v == "a").count(), 2);
        assert_eq!(cur.values().filter(|v| *v == "b").count(), 3);
        assert_eq!(cur.values().filter(|v| *v == "c").count(), 0);
        assert_eq!(cur.values().filter(|v| *v == "d").count(), 2);
        assert_eq!(cur.len(), 7, "three find no room: {cur:?}");
    }

    #[test]
    fn a_missing_node_keeps_its_instances_until_its_grace_ends() {
        let recs = [rec("a", &[]), rec("b", &[])];
        let wants: BTreeMap<_, _> = [want("w", "demo", &[])].into();
        let cur = map(&[("w", "gone")]);
        let none = run(&recs, &[], &wants, &cur, &[], &[]);
        assert!(none.is_empty(), "within its grace: {none:?}");
        let moved = run(&recs, &[], &wants, &cur, &["gone"], &[]);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].from.as_deref(), Some("gone"));
        assert!(moved[0].to.is_some());
        assert_eq!(moved[0].guard, Guard::NodeGone("gone".into()));
    }

    #[test]
    fn draining_unassigns_what_can_move_then_places_it_once_the_copy_is_gone() {
        let recs = [rec("a", &[("zone", "x")]), rec("b", &[])];
        let wants: BTreeMap<_, _> = [
            want("free", "demo", &[]),
            want("pinned", "demo", &[("zone", "x")]),
        ]
        .into();
        let mut cur = map(&[("free", "a"), ("pinned", "a")]);
        let moves = run(
            &recs,
            &["a"],
            &wants,
            &cur,
            &[],
            &[("free", "a"), ("pinned", "a")],
        );
        assert_eq!(
            moves,
            vec![Move {
                name: "free".into(),
                from: Some("a".into()),
                to: None,
                guard: Guard::Draining("a".into()),
            }]
        );
        apply(&mut cur, &moves);
        // While a still reports its copy, it is not placed anywhere.
        let wait = run(
            &recs,
            &["a"],
            &wants,
            &cur,
            &[],
            &[("free", "a"), ("pinned", "a")],
        );
        assert!(wait.is_empty(), "{wait:?}");
        // Once a's copy is gone, it goes to b.
        let placed = run(&recs, &["a"], &wants, &cur, &[], &[("pinned", "a")]);
        assert_eq!(
            placed,
            vec![Move {
                name: "free".into(),
                from: None,
                to: Some("b".into()),
                guard: Guard::None,
            }]
        );
    }

    #[test]
    fn an_assignment_nobody_wants_is_dropped() {
        let recs = [rec("a", &[])];
        let cur = map(&[("old", "a")]);
        let moves = run(&recs, &[], &BTreeMap::new(), &cur, &[], &[]);
        assert_eq!(
            moves,
            vec![Move {
                name: "old".into(),
                from: Some("a".into()),
                to: None,
                guard: Guard::None,
            }]
        );
    }
}
