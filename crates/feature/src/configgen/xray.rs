//! The `xray` generator: a JSON config that Xray-core and v2ray 4.x both
//! accept (only fields both know; no geoip/geosite files needed).
//!
//! Ports: `main` (the socks, vmess or shadowsocks inbound) and, when allocated
//! and `http_inbound` is on, `http`. Options: `log_level`, `inbound` (socks,
//! vmess, shadowsocks), `http_inbound`, `udp`, `auth_username` /
//! `auth_password`, `uuid` (vmess), `method` / `password` (shadowsocks),
//! `outbound` (freedom, vmess, shadowsocks, socks) with `server_address` /
//! `server_port`, `block_private` (servers refuse the host's private and
//! loopback ranges; on by default for vmess and shadowsocks inbounds).

use serde_json::{json, Map, Value};

use super::options::{OptionProblem, BAD_OPTION_VALUE, MISSING_OPTION};
use super::{Generator, RenderInput, Rendered};
use crate::catalog::manifest::Manifest;
use crate::{Error, Result};

/// The Xray / v2ray generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Xray;

const INBOUNDS: &[&str] = &["socks", "vmess", "shadowsocks"];
const OUTBOUNDS: &[&str] = &["freedom", "vmess", "shadowsocks", "socks"];

/// Private, loopback and link-local ranges a server must not reach for its
/// clients.
const PRIVATE: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// Is `s` a UUID (8-4-4-4-12 hex digits)?
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn inbound<'a>(o: &super::Opts<'a>, mode: Option<&'a str>) -> &'a str {
    o.nonempty("inbound").unwrap_or(match mode {
        Some("vmess-server") => "vmess",
        Some("shadowsocks-server") => "shadowsocks",
        _ => "socks",
    })
}

impl Generator for Xray {
    fn id(&self) -> &str {
        "xray"
    }

    fn check_options(&self, _m: &Manifest, options: &Map<String, Value>) -> Vec<OptionProblem> {
        let o = super::Opts(options);
        let mut p = Vec::new();
        let inb = o.nonempty("inbound").unwrap_or("socks");
        let outb = o.nonempty("outbound").unwrap_or("freedom");
        if !INBOUNDS.contains(&inb) {
            p.push(OptionProblem::new(
                "inbound",
                BAD_OPTION_VALUE,
                format!(
                    "xray cannot generate a {inb:?} inbound: one of {}",
                    INBOUNDS.join(", ")
                ),
            ));
        }
        if !OUTBOUNDS.contains(&outb) {
            p.push(OptionProblem::new(
                "outbound",
                BAD_OPTION_VALUE,
                format!(
                    "xray cannot generate a {outb:?} outbound: one of {}",
                    OUTBOUNDS.join(", ")
                ),
            ));
        }
        if inb == "vmess" || outb == "vmess" {
            o.need("uuid", "for vmess", &mut p);
        }
        if inb == "shadowsocks" || outb == "shadowsocks" {
            o.need("password", "for shadowsocks", &mut p);
        }
        if outb != "freedom" {
            o.need("server_address", &format!("for a {outb} outbound"), &mut p);
            o.need("server_port", &format!("for a {outb} outbound"), &mut p);
        }
        if let Some(u) = o.nonempty("uuid") {
            if !is_uuid(u) {
                // The uuid is the vmess credential: not repeated.
                p.push(OptionProblem::new(
                    "uuid",
                    BAD_OPTION_VALUE,
                    "is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                ));
            }
        }
        p
    }

    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered> {
        let ctx = input.ctx;
        let o = input.opts();
        let bind = ctx.bind_str();
        let main = ctx.port("main")?;
        let inb = inbound(&o, ctx.mode.as_deref());
        let method = o.nonempty("method").unwrap_or("chacha20-poly1305");
        let need = |k: &str| -> Result<&str> {
            o.nonempty(k).ok_or_else(|| {
                Error::new(MISSING_OPTION, format!("option {k} is required here")).with("option", k)
            })
        };
        let accounts = o
            .nonempty("auth_username")
            .map(|u| (u, o.str("auth_password").unwrap_or("")));
        let mut inbounds = Vec::new();
        match inb {
            "socks" => {
                let mut s = json!({ "auth": "noauth", "udp": o.bool("udp", true), "ip": bind });
                if let Some((u, p)) = accounts {
                    s["auth"] = json!("password");
                    s["accounts"] = json!([{ "user": u, "pass": p }]);
                }
                inbounds.push(json!({ "tag": "socks-in", "protocol": "socks", "listen": bind, "port": main, "settings": s }));
            }
            "vmess" => {
                let id = need("uuid")?;
                if !is_uuid(id) {
                    return Err(Error::new(BAD_OPTION_VALUE, "option uuid is not a UUID")
                        .with("option", "uuid"));
                }
                inbounds.push(json!({ "tag": "vmess-in", "protocol": "vmess", "listen": bind, "port": main, "settings": { "clients": [{ "id": id }] } }));
            }
            "shadowsocks" => {
                inbounds.push(json!({ "tag": "shadowsocks-in", "protocol": "shadowsocks", "listen": bind, "port": main, "settings": {
                    "method": method, "password": need("password")?, "network": if o.bool("udp", true) { "tcp,udp" } else { "tcp" },
                } }));
            }
            other => {
                return Err(Error::new(
                    BAD_OPTION_VALUE,
                    format!("xray cannot generate a {other:?} inbound"),
                )
                .with("option", "inbound"))
            }
        }
        if o.bool("http_inbound", true) {
            if let Some(http) = ctx.ports.get("http") {
                let mut s = json!({});
                if let Some((u, p)) = accounts {
                    s["accounts"] = json!([{ "user": u, "pass": p }]);
                }
                inbounds.push(json!({ "tag": "http-in", "protocol": "http", "listen": bind, "port": http, "settings": s }));
            }
        }
        let outb = o.nonempty("outbound").unwrap_or("freedom");
        let server = || -> Result<(String, u16)> {
            let a = need("server_address")?.to_string();
            let p = o.port("server_port").ok_or_else(|| {
                Error::new(MISSING_OPTION, "option server_port is required here")
                    .with("option", "server_port")
            })?;
            Ok((a, p))
        };
        let mut outbounds = Vec::new();
        match outb {
            "freedom" => {}
            "vmess" => {
                let (a, p) = server()?;
                let id = need("uuid")?;
                outbounds.push(json!({ "tag": "proxy", "protocol": "vmess", "settings": { "vnext": [{ "address": a, "port": p, "users": [{ "id": id, "security": "auto" }] }] } }));
            }
            "shadowsocks" => {
                let (a, p) = server()?;
                outbounds.push(json!({ "tag": "proxy", "protocol": "shadowsocks", "settings": { "servers": [{ "address": a, "port": p, "method": method, "password": need("password")? }] } }));
            }
            "socks" => {
                let (a, p) = server()?;
                outbounds.push(json!({ "tag": "proxy", "protocol": "socks", "settings": { "servers": [{ "address": a, "port": p }] } }));
            }
            other => {
                return Err(Error::new(
                    BAD_OPTION_VALUE,
                    format!("xray cannot generate a {other:?} outbound"),
                )
                .with("option", "outbound"))
            }
        }
        outbounds.push(json!({ "tag": "direct", "protocol": "freedom", "settings": {} }));
        outbounds.push(json!({ "tag": "block", "protocol": "blackhole", "settings": {} }));
        let server_side = inb != "socks";
        let mut cfg = json!({
            "log": {
                "loglevel": o.nonempty("log_level").unwrap_or("warning"),
                "access": ctx.log_dir.join("access.log").to_string_lossy(),
                "error": ctx.log_dir.join("error.log").to_string_lossy(),
            },
            "inbounds": inbounds,
            "outbounds": outbounds,
        });
        if o.bool("block_private", server_side) {
            cfg["routing"] = json!({
                "domainStrategy": "IPIfNonMatch",
                "rules": [{ "type": "field", "ip": PRIVATE, "outboundTag": "block" }],
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
