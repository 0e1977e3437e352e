//! Process: the instance's process spec (binary, arguments, ports, probe,
//! limits, user, network namespace) added to the desired set, which starts
//! it. Undo removes it from the desired set, which stops it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hangar_store::{Desired, Source};
use hangar_supervisor::{Check, ProbeSpec, ProcessSpec, RestartPolicy};

use super::super::{limits, port_names, Instance, Instances};
use crate::desired::Want;
use crate::error::{Error, Result};
use hangar_feature::catalog::manifest::{EnvPlaces, HealthKind};
use hangar_feature::catalog::Manifest;

pub(super) async fn apply(ins: &Instances, inst: &Instance, m: &Manifest) -> Result<()> {
    let spec = spec(ins, inst, m)?;
    let name = spec.name.clone();
    let mut change = ins.s.desired.write().await;
    let mut desired = change.current().clone();
    desired.insert(
        name.clone(),
        Arc::new(Want {
            spec,
            source: Source::Instance,
            desired: Desired::Running,
        }),
    );
    let report = change.apply(desired).await;
    match report
        .errors
        .into_iter()
        .find(|(n, _)| n.is_empty() || *n == name)
    {
        // A crash before it ran is the restart policy's to judge: it backs
        // off and tries again; the ready step sees how that ends.
        Some((_, e))
            if e.is(hangar_supervisor::ErrorKind::ProcessStartFailed)
                && ins
                    .s
                    .manager
                    .status(&name)
                    .is_ok_and(|s| s.state.is_active()) =>
        {
            Ok(())
        }
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

pub(super) async fn undo(ins: &Instances, inst: &Instance) -> Result<()> {
    let mut change = ins.s.desired.write().await;
    let mut desired = change.current().clone();
    if desired.remove(&inst.process).is_none() {
        return Ok(());
    }
    let report = change.apply(desired).await;
    match report.errors.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

pub(in crate::instances) fn spec(
    ins: &Instances,
    inst: &Instance,
    m: &Manifest,
) -> Result<ProcessSpec> {
    let binary = inst.binary.clone().ok_or_else(|| {
        Error::new(
            crate::ErrorKind::InstanceNotInstalled,
            format!("{} is not installed", inst.feature),
        )
    })?;
    let names = port_names(m);
    let mut spec = ProcessSpec::new(&inst.process, binary.display().to_string());
    spec.args = m.binary.args.iter().map(|a| substitute(a, inst)).collect();
    spec.working_dir = Some(inst.dir.join("data"));
    // The manifest's environment first (a bundle's library path, …); hangar's
    // own variables below win over it.
    let install_dir = super::super::render::install_dir(ins, inst);
    spec.env.extend(m.env_for(EnvPlaces {
        install_dir: &install_dir,
        instance_dir: &inst.dir,
        config: inst.config_file.as_deref(),
    }));
    spec.env
        .insert("HANGAR_INSTANCE_ID".into(), inst.id.clone());
    spec.env
        .insert("HANGAR_INSTANCE_NAME".into(), inst.name.clone());
    spec.env.insert("HANGAR_BIND".into(), inst.bind.clone());
    for (n, p) in &inst.ports {
        spec.env.insert(
            format!("HANGAR_PORT_{}", n.to_ascii_uppercase().replace('-', "_")),
            p.to_string(),
        );
    }
    if m.health_port {
        if let Some(p) = m
            .health
            .as_ref()
            .and_then(|h| names.get(h.port_index.unwrap_or(0)))
            .and_then(|n| inst.ports.get(n))
        {
            spec.env.insert("HEALTH_PORT".into(), p.to_string());
        }
    }
    if let Some(c) = &inst.config_file {
        spec.env
            .insert("HANGAR_CONFIG".into(), c.display().to_string());
    }
    let s = &ins.s.settings;
    spec.restart = RestartPolicy {
        initial_interval: Duration::from_millis(500),
        max_interval: Duration::from_secs(30),
        max_retries: s.start_retries,
        ..RestartPolicy::default()
    };
    spec.start_timeout = s.ready_timeout;
    if let Some(p) = probe(m, inst, &names) {
        let mut live = p.clone();
        live.failure_threshold = live.failure_threshold.max(3);
        spec.readiness = Some(p);
        spec.liveness = Some(live);
    }
    limits::apply(&mut spec, m, inst)?;
    if let Some(u) = &s.user {
        let run_as = hangar_supervisor::RunAs::from_name(u).map_err(Error::from)?;
        spec.env.insert("USER".into(), u.clone());
        spec.env
            .insert("HOME".into(), inst.dir.join("data").display().to_string());
        spec.user = Some(run_as);
    }
    // Its own network: the process joins the namespace before exec and
    // binds the instance address there.
    if let Some(n) = &inst.network {
        spec.netns = Some(n.namespace_path.clone());
    }
    Ok(spec)
}

/// Replace `{{config}}`, `{{dir}}`, `{{bind}}` and `{{port.NAME}}` in a manifest argument.
fn substitute(arg: &str, inst: &Instance) -> String {
    let mut out = arg.replace("{{bind}}", &inst.bind);
    out = out.replace("{{dir}}", &inst.dir.display().to_string());
    if let Some(c) = &inst.config_file {
        out = out.replace("{{config}}", &c.display().to_string());
    }
    for (n, p) in &inst.ports {
        out = out.replace(&format!("{{{{port.{n}}}}}"), &p.to_string());
    }
    out
}

/// The probe a manifest's `health` describes, against the instance's address.
fn probe(m: &Manifest, inst: &Instance, names: &[String]) -> Option<ProbeSpec> {
    let h = m.health.as_ref()?;
    let port = || {
        let i = h.port_index.unwrap_or(0);
        names.get(i).and_then(|n| inst.ports.get(n)).copied()
    };
    let check = match h.kind {
        HealthKind::Tcp => Check::Tcp {
            address: format!("{}:{}", inst.bind, port()?),
        },
        HealthKind::Http => Check::Http {
            url: format!(
                "http://{}:{}{}",
                inst.bind,
                port()?,
                h.path.as_deref().unwrap_or("/")
            ),
            status: None,
            headers: BTreeMap::new(),
            body_contains: None,
        },
        HealthKind::Exec => Check::Exec {
            command: h.command.iter().map(|a| substitute(a, inst)).collect(),
        },
        HealthKind::Process => Check::Process,
    };
    let mut p = ProbeSpec::new(check);
    if let Some(t) = h.timeout_seconds.filter(|t| *t > 0.0) {
        p.timeout = Duration::from_secs_f64(t);
    }
    if let Some(i) = h.interval_seconds.filter(|t| *t > 0.0) {
        p.interval = Duration::from_secs_f64(i);
    }
    Some(p)
}
