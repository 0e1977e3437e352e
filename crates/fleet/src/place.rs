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
    /// The node it goes to; `None`: no node fits, the assignment is dropped.
    pub to: Option<String>,
}

#[derive(Default, Clone, Copy)]
struct Used {
    count: u32,
    memory: u64,
    pids: u64,
    ports: u32,
}

/// The moves that make `current` a good placement of `wants`:
///
/// - an instance stays where it is while its node is registered and not
///   draining, or unregistered but not yet `lost` (its grace runs);
/// - the others (new, on a lost node, on a draining node) go to the node
///   whose labels hold every one of the instance's `on`, that has room
///   (instances, memory, pids, free ports), and that runs the fewest
///   instances of the same feature, then the fewest in all, then by name;
/// - one with no such node: from a lost node it is dropped (shown pending),
///   on a draining node it stays;
/// - an assignment whose instance is no longer wanted is dropped.
pub(crate) fn plan(
    nodes: &BTreeMap<String, Node<'_>>,
    wants: &BTreeMap<String, Want>,
    current: &BTreeMap<String, String>,
    lost: &BTreeSet<String>,
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
                    take(&mut used, &mut same, n, &w.feature, need(&w.feature));
                } else {
                    place.push((w, Some(n)));
                }
            }
            None => place.push((w, None)),
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
        match best {
            Some(to) => {
                take(&mut used, &mut same, to, &w.feature, n);
                moves.push(Move {
                    name: w.name.clone(),
                    from: from.cloned(),
                    to: Some(to.to_string()),
                });
            }
            None => match from {
                // A draining node keeps what cannot go anywhere else.
                Some(f) if nodes.contains_key(f) => {
                    take(&mut used, &mut same, f, &w.feature, n);
                }
                Some(f) => moves.push(Move {
                    name: w.name.clone(),
                    from: Some(f.clone()),
                    to: None,
                }),
                None => {}
            },
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
) {
    let u = used.entry(node).or_default();
    u.count += 1;
    u.memory += n.memory;
    u.pids += n.pids;
    u.ports += n.ports;
    *same.entry((node, feature)).or_default() += 1;
}

/// Has the node room for one more instance needing `n`? The node's
/// `ports_free` already leaves out the ports of the instances it runs, so
/// only this pass's new ones count against it; the other limits count every
/// instance placed on it.
fn fits(r: &NodeRecord, u: Option<&Used>, n: Need) -> bool {
    let u = u.copied().unwrap_or_default();
    r.max_instances.is_none_or(|m| u.count < m)
        && r.memory.is_none_or(|m| u.memory + n.memory <= m)
        && r.pids.is_none_or(|m| u.pids + n.pids <= m)
        && n.ports <= r.ports_free
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

    fn nodes<'a>(recs: &'a [NodeRecord], draining: &[&str]) -> BTreeMap<String, Node<'a>> {
        recs.iter()
            .map(|r| {
                (
                    r.name.clone(),
                    Node {
                        record: r,
                        draining: draining.contains(&r.name.as_str()),
                    },
                )
            })
            .collect()
    }

    fn apply(current: &mut BTreeMap<String, String>, moves: &[Move]) {
        for m in moves {
            match &m.to {
                Some(t) => current.insert(m.name.clone(), t.clone()),
                None => current.remove(&m.name),
            };
        }
    }

    const ONE_PORT: Need = Need {
        memory: 64 << 20,
        pids: 16,
        ports: 1,
    };

    #[test]
    fn thirty_instances_spread_evenly_over_three_nodes() {
        let recs = [rec("a", &[]), rec("b", &[]), rec("c", &[])];
        let wants: BTreeMap<_, _> = (0..30)
            .map(|i| want(&format!("d{i:02}"), "demo", &[]))
            .collect();
        let mut cur = BTreeMap::new();
        let moves = plan(&nodes(&recs, &[]), &wants, &cur, &BTreeSet::new(), &|_| {
            ONE_PORT
        });
        apply(&mut cur, &moves);
        for n in ["a", "b", "c"] {
            assert_eq!(cur.values().filter(|v| *v == n).count(), 10, "{cur:?}");
        }
        // A second pass changes nothing.
        let again = plan(&nodes(&recs, &[]), &wants, &cur, &BTreeSet::new(), &|_| {
            ONE_PORT
        });
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn same_feature_spreads_before_totals_balance() {
        let recs = [rec("a", &[]), rec("b", &[])];
        let mut cur: BTreeMap<String, String> = [("x1", "a"), ("x2", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut wants: BTreeMap<_, _> = [want("x1", "other", &[]), want("x2", "other", &[])].into();
        wants.extend([want("r1", "redis", &[]), want("r2", "redis", &[])]);
        let moves = plan(&nodes(&recs, &[]), &wants, &cur, &BTreeSet::new(), &|_| {
            ONE_PORT
        });
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
        let moves = plan(
            &nodes(&recs, &[]),
            &wants,
            &BTreeMap::new(),
            &BTreeSet::new(),
            &|_| ONE_PORT,
        );
        assert_eq!(
            moves,
            vec![Move {
                name: "p".into(),
                from: None,
                to: Some("b".into())
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
        let recs = [a, b, c];
        let wants: BTreeMap<_, _> = (0..8)
            .map(|i| want(&format!("w{i}"), "demo", &[]))
            .collect();
        let mut cur = BTreeMap::new();
        let moves = plan(&nodes(&recs, &[]), &wants, &cur, &BTreeSet::new(), &|_| {
            ONE_PORT
        });
        apply(&mut cur, &moves);
        assert_eq!(cur.values().filter(|v| *v == "a").count(), 2);
        assert_eq!(cur.values().filter(|v| *v == "b").count(), 3);
        assert_eq!(cur.values().filter(|v| *v == "c").count(), 0);
        assert_eq!(cur.len(), 5, "three find no room: {cur:?}");
    }

    #[test]
    fn a_missing_node_keeps_its_instances_until_its_grace_ends() {
        let recs = [rec("a", &[]), rec("b", &[])];
        let wants: BTreeMap<_, _> = [want("w", "demo", &[])].into();
        let cur: BTreeMap<String, String> = [("w".to_string(), "gone".to_string())].into();
        let none = plan(&nodes(&recs, &[]), &wants, &cur, &BTreeSet::new(), &|_| {
            ONE_PORT
        });
        assert!(none.is_empty(), "within its grace: {none:?}");
        let lost: BTreeSet<String> = ["gone".to_string()].into();
        let moved = plan(&nodes(&recs, &[]), &wants, &cur, &lost, &|_| ONE_PORT);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].from.as_deref(), Some("gone"));
        assert!(moved[0].to.is_some());
    }

    #[test]
    fn draining_moves_what_can_move_and_keeps_the_rest() {
        let recs = [rec("a", &[("zone", "x")]), rec("b", &[])];
        let wants: BTreeMap<_, _> = [
            want("free", "demo", &[]),
            want("pinned", "demo", &[("zone", "x")]),
        ]
        .into();
        let cur: BTreeMap<String, String> = [("free", "a"), ("pinned", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let moves = plan(
            &nodes(&recs, &["a"]),
            &wants,
            &cur,
            &BTreeSet::new(),
            &|_| ONE_PORT,
        );
        assert_eq!(
            moves,
            vec![Move {
                name: "free".into(),
                from: Some("a".into()),
                to: Some("b".into())
            }]
        );
    }

    #[test]
    fn an_assignment_nobody_wants_is_dropped() {
        let recs = [rec("a", &[])];
        let cur: BTreeMap<String, String> = [("old".to_string(), "a".to_string())].into();
        let moves = plan(
            &nodes(&recs, &[]),
            &BTreeMap::new(),
            &cur,
            &BTreeSet::new(),
            &|_| ONE_PORT,
        );
        assert_eq!(
            moves,
            vec![Move {
                name: "old".into(),
                from: Some("a".into()),
                to: None
            }]
        );
    }
}
