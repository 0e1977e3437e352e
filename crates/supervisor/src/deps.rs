//! Dependencies between processes: conditions, cycle detection, stop order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state::State;
use crate::status::ProcessStatus;

/// When a dependency counts as met (the process-compose conditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The dependency has been started (it runs, or ran and exited).
    Started,
    /// The dependency is running and ready (readiness passed, liveness not failing).
    Healthy,
    /// The dependency exited with code 0.
    CompletedSuccessfully,
}

impl std::str::FromStr for Condition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "started" | "process_started" => Ok(Condition::Started),
            "healthy" | "process_healthy" => Ok(Condition::Healthy),
            "completed_successfully" | "process_completed_successfully" => {
                Ok(Condition::CompletedSuccessfully)
            }
            other => Err(format!(
                "unknown condition {other:?}; expected started, healthy or completed_successfully"
            )),
        }
    }
}

impl Condition {
    /// The names a condition is written with (the `process_` forms are read too).
    pub const NAMES: &'static [&'static str] = &["started", "healthy", "completed_successfully"];
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::unknown_variant(&s, Condition::NAMES))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::CompletedSuccessfully => "completed_successfully",
        })
    }
}

/// Where a dependency stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DepState {
    Met,
    Pending,
    /// Cannot be met any more; the reason.
    Broken(String),
}

/// Evaluate one condition against a dependency's status (`None`: not registered yet).
pub(crate) fn evaluate(cond: Condition, dep: Option<&ProcessStatus>) -> DepState {
    let Some(st) = dep else {
        return DepState::Pending;
    };
    let exit_ok = st.last_exit.is_some_and(|e| e.success());
    match (cond, st.state) {
        (_, State::Failed) => DepState::Broken(format!("{} failed", st.name)),
        (Condition::Started, State::Running | State::Exited) => DepState::Met,
        (Condition::Healthy, State::Running) => {
            if st.health.status == crate::health::Health::Unhealthy {
                DepState::Pending
            } else {
                DepState::Met
            }
        }
        (Condition::Healthy, State::Exited) => {
            DepState::Broken(format!("{} exited ({})", st.name, describe_exit(st)))
        }
        (Condition::CompletedSuccessfully, State::Exited) if exit_ok => DepState::Met,
        (Condition::CompletedSuccessfully, State::Exited) => {
            DepState::Broken(format!("{} exited ({})", st.name, describe_exit(st)))
        }
        _ => DepState::Pending,
    }
}

fn describe_exit(st: &ProcessStatus) -> String {
    st.last_exit
        .map(|e| e.to_string())
        .unwrap_or_else(|| "no exit status".into())
}

/// A dependency cycle through the given graph, if there is one, as the names on it
/// in order (first name repeated at the end).
pub fn find_cycle<'a>(graph: &HashMap<&'a str, Vec<&'a str>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut names: Vec<&&str> = graph.keys().collect();
    names.sort();
    for &start in names {
        if marks.contains_key(start) {
            continue;
        }
        // Iterative DFS keeping the path, so deep chains cannot overflow the stack.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Open);
        while let Some((node, i)) = path.last().copied() {
            let next = graph.get(node).and_then(|d| d.get(i)).copied();
            match next {
                Some(dep) => {
                    if let Some(top) = path.last_mut() {
                        top.1 += 1;
                    }
                    match marks.get(dep) {
                        Some(Mark::Open) => {
                            let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                path[from..].iter().map(|(n, _)| n.to_string()).collect();
                            cycle.push(dep.to_string());
                            return Some(cycle);
                        }
                        Some(Mark::Done) => {}
                        None => {
                            marks.insert(dep, Mark::Open);
                            path.push((dep, 0));
                        }
                    }
                }
                None => {
                    marks.insert(node, Mark::Done);
                    path.pop();
                }
            }
        }
    }
    None
}

/// Batches to stop `names` in: every process is stopped before the processes it
/// depends on. Names in one batch can be stopped concurrently.
pub(crate) fn stop_batches(
    names: &BTreeSet<String>,
    deps: &BTreeMap<String, Vec<String>>,
) -> Vec<Vec<String>> {
    // dependents_left[n] = how many processes in `names` depend on n.
    let mut dependents_left: BTreeMap<&str, usize> =
        names.iter().map(|n| (n.as_str(), 0)).collect();
    for n in names {
        for d in deps.get(n).into_iter().flatten() {
            if let Some(c) = dependents_left.get_mut(d.as_str()) {
                *c += 1;
            }
        }
    }
    let mut out = Vec::new();
    let mut left: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    while !left.is_empty() {
        let batch: Vec<&str> = left
            .iter()
            .copied()
            .filter(|n| dependents_left.get(n).copied().unwrap_or(0) == 0)
            .collect();
        // A cycle (refused at start, but be safe): stop the rest together.
        let batch = if batch.is_empty() {
            left.iter().copied().collect()
        } else {
            batch
        };
        for n in &batch {
            left.remove(n);
            for d in deps.get(*n).into_iter().flatten() {
                if let Some(c) = dependents_left.get_mut(d.as_str()) {
                    *c = c.saturating_sub(1);
                }
            }
        }
        out.push(batch.into_iter().map(str::to_string).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_with_their_path() {
        let mut g: HashMap<&str, Vec<&str>> = HashMap::new();
        g.insert("a", vec!["b"]);
        g.insert("b", vec!["c"]);
        g.insert("c", vec!["a"]);
        g.insert("d", vec!["a"]);
        let c = find_cycle(&g).unwrap();
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
        g.insert("c", vec![]);
        assert_eq!(find_cycle(&g), None);
        g.insert("e", vec!["e"]);
        assert_eq!(find_cycle(&g), Some(vec!["e".to_string(), "e".to_string()]));
    }

    #[test]
    fn dependents_stop_first() {
        let names: BTreeSet<String> = ["db", "api", "web", "lone"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut deps = BTreeMap::new();
        deps.insert("api".to_string(), vec!["db".to_string()]);
        deps.insert("web".to_string(), vec!["api".to_string(), "db".to_string()]);
        let b = stop_batches(&names, &deps);
        assert_eq!(
            b,
            vec![
                vec!["lone".to_string(), "web".to_string()],
                vec!["api".to_string()],
                vec!["db".to_string()]
            ]
        );
    }
}
