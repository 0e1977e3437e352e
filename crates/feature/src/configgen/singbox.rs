//! The `sing-box` generator: a sing-box (1.12) JSON config.
//!
//! Ports: `proxy` (the inbound) and, when allocated, `api` (the Clash API,
//! which the catalog's HTTP health check probes). Options: `log_level`,
//! `inbound` (mixed, socks, http, shadowsocks, tun), `auth_username` /
//! `auth_password` (mixed, socks, http), `method` / `password`
//! (shadowsocks, either way), `outbound` (direct, socks, shadowsocks) with
//! `server_address` / `server_port`, `tun_address`, `auto_route`,
//! `strict_route`, `mtu`, `api_secret`. Built with `serde_json`, never by
//! pasting strings.

use serde_json::{json, Map, Value};

use super::options::{OptionProblem, BAD_OPTION_VALUE};
use super::{Generator, RenderInput, Rendered};
use crate::catalog::manifest::Manifest;
use crate::{Error, Result};

/// The sing-box generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingBox;

const INBOUNDS: &[&str] = &["mixed", "socks", "http", "shadowsocks", "tun"];
const OUTBOUNDS: &[&str] = &["direct", "socks", "shadowsocks"];

fn inbound<'a>(o: &super::Opts<'a>, mode: Option<&'a str>) -> &'a str {
    o.nonempty("inbound").unwrap_or(match mode {
        Some("tun-vpn") => "tun",
        Some("shadowsocks-server") => "shadowsocks",
        _ => "mixed",
    })
}

fn users(o: &super::Opts<'_>) -> Option<Value> {
    let u = o.nonempty("auth_username")?;
    Some(json!([{ "username": u, "password": o.str("auth_password").unwrap_or("") }]))
}

impl Generator for SingBox {
    fn id(&self) -> &str {
        "sing-box"
    }

    fn check_options(&self, _m: &Manifest, options: &Map<String, Value>) -> Vec<OptionProblem> {
        let o = super::Opts(options);
        let mut p = Vec::new();
        let inb = o.nonempty("inbound").unwrap_or("mixed");
        let outb = o.nonempty("outbound").unwrap_or("direct");
        if !INBOUNDS.contains(&inb) {
            p.push(OptionProblem::new(
                "inbound",
                BAD_OPTION_VALUE,
                format!(
                    "sing-box cannot generate a {inb:?} inbound: one of {}",
                    INBOUNDS.join(", ")
                ),
            ));
        }
        if !OUTBOUNDS.contains(&outb) {
            p.push(OptionProblem::new(
                "outbound",
                BAD_OPTION_VALUE,
                format!(
                    "sing-box cannot generate a {outb:?} outbound: one of {}",
                    OUTBOUNDS.join(", ")
                ),
            ));
        }
        if inb == "shadowsocks" {
            o.need("password", "for a shadowsocks inbound", &mut p);
        }
        if outb != "direct" {
            o.need("server_address", &format!("for a {outb} outbound"), &mut p);
            o.need("server_port", &format!("for a {outb} outbound"), &mut p);
            if outb == "shadowsocks" && !p.iter().any(|x| x.key == "password") {
                o.need("password", "for a shadowsocks outbound", &mut p);
            }
        }
        p
    }

    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered> {
        let ctx = input.ctx;
        let o = input.opts();
        let bind = ctx.bind_str();
        let proxy_port = ctx.port("proxy")?;
        let inb = inbound(&o, ctx.mode.as_deref());
        let method = o.nonempty("method").unwrap_or("chacha20-ietf-poly1305");
        let mut inbounds = Vec::new();
        let local = |kind: &str| {
            let mut v = json!({ "type": kind, "tag": format!("{kind}-in"), "listen": bind, "listen_port": proxy_port });
            if let Some(u) = users(&o) {
                v["users"] = u;
            }
            v
        };
        match inb {
            "mixed" | "socks" | "http" => inbounds.push(local(inb)),
            "shadowsocks" => inbounds.push(json!({
                "type": "shadowsocks", "tag": "shadowsocks-in",
                "listen": bind, "listen_port": proxy_port,
                "method": method, "password": o.str("password").unwrap_or(""),
            })),
            "tun" => {
                let name: String = format!("hg{}", ctx.instance_id)
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(15)
                    .collect();
                inbounds.push(json!({
                    "type": "tun", "tag": "tun-in",
                    "interface_name": name,
                    "address": [o.nonempty("tun_address").unwrap_or("172.19.0.1/30")],
                    "mtu": o.int("mtu").unwrap_or(9000),
                    "auto_route": o.bool("auto_route", true),
                    "strict_route": o.bool("strict_route", false),
                    "stack": "system",
                }));
                inbounds.push(local("mixed"));
            }
            other => {
                return Err(Error::new(
                    BAD_OPTION_VALUE,
                    format!("sing-box cannot generate a {other:?} inbound"),
                )
                .with("option", "inbound"))
            }
        }
        let outb = o.nonempty("outbound").unwrap_or("direct");
        let mut outbounds = Vec::new();
        let server = || -> Result<(String, u16)> {
            match (o.nonempty("server_address"), o.port("server_port")) {
                (Some(a), Some(p)) => Ok((a.to_string(), p)),
                _ => Err(Error::new(
                    super::options::MISSING_OPTION,
                    format!("a {outb} outbound needs server_address and server_port"),
                )),
            }
        };
        let final_tag = match outb {
            "direct" => "direct",
            "socks" => {
                let (a, p) = server()?;
                outbounds.push(json!({ "type": "socks", "tag": "proxy", "server": a, "server_port": p, "version": "5" }));
                "proxy"
            }
            "shadowsocks" => {
                let (a, p) = server()?;
                outbounds.push(json!({ "type": "shadowsocks", "tag": "proxy", "server": a, "server_port": p, "method": method, "password": o.str("password").unwrap_or("") }));
                "proxy"
            }
            other => {
                return Err(Error::new(
                    BAD_OPTION_VALUE,
                    format!("sing-box cannot generate a {other:?} outbound"),
                )
                .with("option", "outbound"))
            }
        };
        outbounds.push(json!({ "type": "direct", "tag": "direct" }));
        let mut route = json!({ "final": final_tag });
        if inb == "tun" {
            route["auto_detect_interface"] = json!(true);
        }
        let mut cfg = json!({
            "log": {
                "level": o.nonempty("log_level").unwrap_or("info"),
                "output": ctx.log_dir.join("sing-box.log").to_string_lossy(),
                "timestamp": true,
            },
            "inbounds": inbounds,
            "outbounds": outbounds,
            "route": route,
        });
        if ctx.ports.contains_key("api") {
            let mut api = json!({ "external_controller": ctx.addr("api")? });
            if let Some(s) = o.nonempty("api_secret") {
                api["secret"] = json!(s);
            }
            cfg["experimental"] = json!({
                "clash_api": api,
                "cache_file": { "enabled": true, "path": ctx.data_dir.join("cache.db").to_string_lossy() },
            });
        }
        let text = serde_json::to_string_pretty(&cfg)
            .map_err(|e| Error::new(super::RENDER_FAILED, format!("cannot write JSON: {e}")))?;
        Ok(Rendered::single(
            input.file_name("config.json"),
            "json",
            text + "\n",
        ))
    }
}
