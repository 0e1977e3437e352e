//! The `Fleet` gRPC service over this node's [`Fleet`], or `FLEET_OFF` when
//! the daemon has no `[daemon.fleet]` section.

use hangar_fleet::{CreateFleetInstance, Fleet, FleetInstance, NodeView};
use tonic::{Request, Response, Status};

use crate::convert::{self, status};
use crate::pb;
use crate::pb::fleet_server::Fleet as FleetApi;

/// The Fleet service.
#[derive(Clone)]
pub struct FleetSvc {
    fleet: Option<Fleet>,
}

impl FleetSvc {
    /// The service over this node's fleet, if it is in one.
    pub fn new(fleet: Option<Fleet>) -> FleetSvc {
        FleetSvc { fleet }
    }

    fn fleet(&self) -> Result<&Fleet, Status> {
        self.fleet
            .as_ref()
            .ok_or_else(|| status(hangar_fleet::off()))
    }
}

fn node(n: NodeView) -> pb::FleetNode {
    let r = n.record.as_ref();
    pb::FleetNode {
        alive: r.is_some(),
        labels: r
            .map(|r| r.labels.clone().into_iter().collect())
            .unwrap_or_default(),
        draining: n.draining,
        leader: n.leader,
        instances: n.instances,
        ports_free: r.map(|r| r.ports_free).unwrap_or(0),
        max_instances: r.and_then(|r| r.max_instances).unwrap_or(0),
        memory_bytes: r.and_then(|r| r.memory).unwrap_or(0),
        pids: r.and_then(|r| r.pids).unwrap_or(0),
        since_ms: r.map(|r| r.since_ms).unwrap_or(0),
        version: r.map(|r| r.version.clone()).unwrap_or_default(),
        name: n.name,
    }
}

/// A fleet instance as the API shows it (its options are not shown: they may
/// hold secrets).
fn instance(i: FleetInstance) -> pb::FleetInstance {
    pb::FleetInstance {
        name: i.want.name,
        feature: i.want.feature,
        node: i.node.unwrap_or_default(),
        state: i.state,
        ports: i
            .ports
            .into_iter()
            .map(|(k, v)| (k, u32::from(v)))
            .collect(),
        error: i.error.unwrap_or_default(),
        on: i.want.on.into_iter().collect(),
        mode: i.want.mode.unwrap_or_default(),
        created_ms: i.want.created_ms,
    }
}

#[tonic::async_trait]
impl FleetApi for FleetSvc {
    async fn list_nodes(
        &self,
        _req: Request<pb::ListFleetNodesRequest>,
    ) -> Result<Response<pb::FleetNodeList>, Status> {
        let nodes = self.fleet()?.nodes().await.map_err(status)?;
        Ok(Response::new(pb::FleetNodeList {
            nodes: nodes.into_iter().map(node).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateFleetInstanceRequest>,
    ) -> Result<Response<pb::FleetInstance>, Status> {
        let r = req.into_inner();
        let fleet = self.fleet()?;
        let i = fleet
            .create(CreateFleetInstance {
                options: r.options.as_ref().map(convert::object).unwrap_or_default(),
                feature: r.feature,
                name: r.name,
                mode: (!r.mode.is_empty()).then_some(r.mode),
                on: r.on.into_iter().collect(),
            })
            .await
            .map_err(status)?;
        Ok(Response::new(instance(i)))
    }

    async fn list(
        &self,
        _req: Request<pb::ListFleetInstancesRequest>,
    ) -> Result<Response<pb::FleetInstanceList>, Status> {
        let all = self.fleet()?.list().await.map_err(status)?;
        Ok(Response::new(pb::FleetInstanceList {
            instances: all.into_iter().map(instance).collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::FleetInstanceRef>,
    ) -> Result<Response<pb::DeleteFleetInstanceReply>, Status> {
        self.fleet()?
            .delete(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteFleetInstanceReply {}))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainFleetNodeRequest>,
    ) -> Result<Response<pb::FleetNode>, Status> {
        let r = req.into_inner();
        let n = self.fleet()?.drain(&r.node, r.undo).await.map_err(status)?;
        Ok(Response::new(node(n)))
    }
}
