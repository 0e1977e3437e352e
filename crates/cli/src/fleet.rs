//! `hangar fleet …`: the fleet of nodes sharing state on etcd, through this
//! node's daemon (any node's daemon answers for the whole fleet).

use std::collections::BTreeMap;

use clap::Subcommand;
use hangar_api::pb;
use hangar_core::Error;
use serde_json::{json, Value};

use crate::client::{api, connect, Target};
use crate::exit;

/// The fleet subcommands.
#[derive(Subcommand)]
pub enum FleetCmd {
    /// The fleet's nodes: registered ones, and those that still hold
    /// instances or a drain mark.
    Nodes {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Ask for an instance somewhere in the fleet; the elected scheduler
    /// places it on a node, whose daemon creates it.
    Create {
        /// Catalog id, e.g. `demo`.
        feature: String,
        /// Instance name, unique in the fleet.
        name: String,
        /// Operation mode (the feature's `modes`).
        #[arg(long)]
        mode: Option<String>,
        /// Option over the mode's defaults: `key=value`; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Only on nodes with this label: `zone=a`; repeatable (all must hold).
        #[arg(long = "on", value_name = "LABEL=VALUE")]
        on: Vec<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Fleet instances with their node and state.
    #[command(visible_alias = "list")]
    Ls {
        /// JSON for scripts: an array of objects with name, feature, node,
        /// state, ports, error.
        #[arg(long)]
        json: bool,
    },
    /// Delete a fleet instance (its node deletes the local instance).
    Delete {
        /// Its name.
        name: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Mark a node draining: its instances move to other nodes where they
    /// fit, and nothing new goes there. `--undo` clears the mark.
    Drain {
        /// The node's name.
        node: String,
        /// Clear the drain mark instead.
        #[arg(long)]
        undo: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(target: Target, cmd: FleetCmd) -> u8 {
    crate::client::block_on(go(target, cmd))
}

fn labels(pairs: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut m = BTreeMap::new();
    for p in pairs {
        match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                m.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return Err(Error::new(
                    hangar_base::ErrorKind::Usage,
                    format!("--on {p:?} is not LABEL=VALUE"),
                )
                .hint("write e.g. --on zone=a"))
            }
        }
    }
    Ok(m)
}

fn node_json(n: &pb::FleetNode) -> Value {
    json!({
        "name": n.name,
        "alive": n.alive,
        "draining": n.draining,
        "leader": n.leader,
        "instances": n.instances,
        "labels": n.labels.iter().collect::<BTreeMap<_, _>>(),
        "ports_free": n.ports_free,
        "version": n.version,
    })
}

fn instance_json(i: &pb::FleetInstance) -> Value {
    json!({
        "name": i.name,
        "feature": i.feature,
        "node": (!i.node.is_empty()).then_some(&i.node),
        "state": i.state,
        "ports": i.ports.iter().collect::<BTreeMap<_, _>>(),
        "error": (!i.error.is_empty()).then_some(&i.error),
        "on": i.on.iter().collect::<BTreeMap<_, _>>(),
    })
}

fn kv(m: &std::collections::HashMap<String, String>) -> String {
    let mut v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

async fn go(t: Target, cmd: FleetCmd) -> Result<u8, Error> {
    let mut c = connect(&t).await?;
    match cmd {
        FleetCmd::Nodes { json } => {
            let nodes = c
                .fleet
                .list_nodes(pb::ListFleetNodesRequest {})
                .await
                .map_err(api)?
                .into_inner()
                .nodes;
            if json {
                outln!("{}", Value::Array(nodes.iter().map(node_json).collect()));
                return Ok(exit::OK);
            }
            let w = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
            outln!(
                "{:w$}  {:9}  {:9}  {:9}  LABELS",
                "NODE",
                "STATE",
                "INSTANCES",
                "SCHEDULER"
            );
            for n in &nodes {
                let state = match (n.alive, n.draining) {
                    (true, false) => "ready",
                    (true, true) => "draining",
                    (false, _) => "down",
                };
                outln!(
                    "{:w$}  {:9}  {:9}  {:9}  {}",
                    n.name,
                    state,
                    n.instances,
                    if n.leader { "leader" } else { "" },
                    kv(&n.labels)
                );
            }
            Ok(exit::OK)
        }
        FleetCmd::Create {
            feature,
            name,
            mode,
            set,
            on,
            json,
        } => {
            let options = crate::instance::parse_sets(&set)?;
            let on = labels(&on)?;
            let i = c
                .fleet
                .create(pb::CreateFleetInstanceRequest {
                    feature,
                    name,
                    mode: mode.unwrap_or_default(),
                    options: Some(hangar_api::convert::structure(&options)),
                    on: on.into_iter().collect(),
                })
                .await
                .map_err(api)?
                .into_inner();
            if json {
                outln!("{}", instance_json(&i));
            } else {
                outln!(
                    "{} asked for in the fleet ({}); `hangar fleet ls` shows where it runs",
                    i.name,
                    i.feature
                );
            }
            Ok(exit::OK)
        }
        FleetCmd::Ls { json } => {
            let list = c
                .fleet
                .list(pb::ListFleetInstancesRequest {})
                .await
                .map_err(api)?
                .into_inner()
                .instances;
            if json {
                outln!("{}", Value::Array(list.iter().map(instance_json).collect()));
                return Ok(exit::OK);
            }
            if list.is_empty() {
                outln!("no fleet instances (ask for one with `hangar fleet create FEATURE NAME`)");
                return Ok(exit::OK);
            }
            let w = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
            let nw = list.iter().map(|i| i.node.len()).max().unwrap_or(4).max(4);
            outln!(
                "{:w$}  {:10}  {:nw$}  {:10}  PORTS",
                "NAME",
                "FEATURE",
                "NODE",
                "STATE"
            );
            for i in &list {
                let mut ports: Vec<String> =
                    i.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
                ports.sort();
                outln!(
                    "{:w$}  {:10}  {:nw$}  {:10}  {}",
                    i.name,
                    i.feature,
                    if i.node.is_empty() { "-" } else { &i.node },
                    i.state,
                    ports.join(",")
                );
            }
            Ok(exit::OK)
        }
        FleetCmd::Delete { name, json } => {
            c.fleet
                .delete(pb::FleetInstanceRef { name: name.clone() })
                .await
                .map_err(api)?;
            if json {
                outln!("{}", json!({ "deleted": name }));
            } else {
                outln!("deleted {name} from the fleet");
            }
            Ok(exit::OK)
        }
        FleetCmd::Drain { node, undo, json } => {
            let n = c
                .fleet
                .drain(pb::DrainFleetNodeRequest { node, undo })
                .await
                .map_err(api)?
                .into_inner();
            if json {
                outln!("{}", node_json(&n));
            } else if undo {
                outln!("{} takes fleet instances again", n.name);
            } else {
                outln!(
                    "{} is draining: its {} instances move where they fit",
                    n.name,
                    n.instances
                );
            }
            Ok(exit::OK)
        }
    }
}
