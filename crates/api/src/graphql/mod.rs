//! The GraphQL API on the daemon's HTTP listener.
//!
//! - `POST /graphql` (and `GET /graphql?query=…`): queries and mutations;
//!   `GET /graphql` with a WebSocket upgrade: subscriptions, over
//!   `graphql-transport-ws` or the older `graphql-ws` protocol.
//! - `GET /graphql/schema.graphql`: the SDL (also committed as
//!   `crates/api/graphql/schema.graphql`).
//! - `GET /login?token=TOKEN`: sets the session cookie and redirects to `/`.
//! - `/`, `/graphiql`, `/assets/…`: the dashboard and GraphiQL
//!   ([`crate::web`]).
//!
//! Any web page a user visits can make the browser talk to 127.0.0.1, so
//! every request is checked before anything runs: its `Host` must name this
//! listener (DNS rebinding sends the attacker's name), its `Origin`, when
//! there is one, must be this listener, and it must carry the API token
//! (`Authorization: Bearer TOKEN`, the token in `api.token` in the data dir,
//! mode 0600) or the session cookie `/login` set. No CORS headers are ever
//! sent. GraphQL is served on loopback listeners only: the HTTP listener has
//! no TLS.

pub mod schema;
pub mod types;

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_graphql_axum::{GraphQL, GraphQLSubscription};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hangar_core::{Daemon, Error};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tower::ServiceExt;

pub use schema::{build, sdl, HangarSchema};

/// The token file in the data dir.
pub const TOKEN_FILE: &str = "api.token";
/// The session cookie's name.
pub const COOKIE: &str = "hangar_session";
/// Sessions kept; the oldest is forgotten beyond this.
const MAX_SESSIONS: usize = 64;

/// The API token and the sessions `/login` opened.
pub struct Auth {
    token: String,
    sessions: Mutex<VecDeque<String>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

/// 32 bytes from the kernel's CSPRNG, as hex.
fn secret() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        filled +=
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(std::io::Error::from)?;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

impl Auth {
    /// The token in `DATA/api.token`, made (mode 0600, 64 hex digits) if
    /// there is none.
    pub fn open(data_dir: &Path) -> Result<Auth, Error> {
        let path = data_dir.join(TOKEN_FILE);
        let io = |what: &str, e: std::io::Error| {
            Error::new(
                crate::ErrorKind::TokenUnusable,
                format!("{what} the API token file: {e}"),
            )
            .with("path", path.display())
            .hint("check the data dir's permissions, or remove the file to have a new token made")
        };
        let token = match std::fs::read_to_string(&path) {
            Ok(t) => t.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let t = secret().map_err(|e| io("cannot make", e))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| io("cannot create", e))?;
                f.write_all(format!("{t}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| io("cannot write", e))?;
                t
            }
            Err(e) => return Err(io("cannot read", e)),
        };
        if token.len() < 32 {
            return Err(Error::new(
                crate::ErrorKind::TokenUnusable,
                "the API token is shorter than 32 characters",
            )
            .with("path", path.display())
            .hint("remove the file to have a new token made at the next start"));
        }
        Ok(Auth {
            token,
            sessions: Mutex::new(VecDeque::new()),
        })
    }

    /// The token (for `hangar dashboard`'s login URL).
    pub fn token(&self) -> &str {
        &self.token
    }

    fn token_ok(&self, given: &str) -> bool {
        given.as_bytes().ct_eq(self.token.as_bytes()).into()
    }

    fn session_ok(&self, given: &str) -> bool {
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Every session is compared, so the time says nothing of which.
        s.iter().fold(false, |ok, id| {
            ok | bool::from(given.as_bytes().ct_eq(id.as_bytes()))
        })
    }

    fn open_session(&self) -> std::io::Result<String> {
        let id = secret()?;
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= MAX_SESSIONS {
            s.pop_front();
        }
        s.push_back(id.clone());
        Ok(id)
    }
}

#[derive(Clone)]
struct Gate {
    auth: Arc<Auth>,
    /// The listener's address: what `Host` and `Origin` must name.
    addr: SocketAddr,
}

impl Gate {
    /// The `Host` values that name this listener.
    fn host_ok(&self, host: &str) -> bool {
        let port = self.addr.port();
        let ip = self.addr.ip();
        let mut names = vec![
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        names.push(match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            v4 => format!("{v4}:{port}"),
        });
        names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

/// A refusal as a GraphQL error body, with the hangar code and hint.
fn refuse(status: StatusCode, e: Error) -> Response {
    let body = serde_json::json!({
        "errors": [{
            "message": e.message,
            "extensions": {
                "code": e.code(),
                "category": e.category().as_str(),
                "hint": e.hint,
            }
        }]
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Where a request may come from: `Host` and `Origin` name this listener.
fn check_origin(g: &Gate, h: &HeaderMap) -> Result<(), (StatusCode, Error)> {
    if !g.addr.ip().is_loopback() {
        return Err((
            StatusCode::FORBIDDEN,
            Error::new(
                crate::ErrorKind::Insecure,
                "GraphQL is served on loopback listeners only",
            )
            .with("address", g.addr)
            .hint("bind the HTTP listener to 127.0.0.1 (daemon.http), and reach it through an SSH tunnel or a TLS proxy"),
        ));
    }
    let host = header_str(h, header::HOST).unwrap_or_default();
    if !g.host_ok(host) {
        return Err((
            StatusCode::FORBIDDEN,
            Error::new(
                crate::ErrorKind::ForeignOrigin,
                format!("the Host {host:?} does not name this listener"),
            )
            .with("host", host)
            .hint(format!(
                "use http://127.0.0.1:{0} or http://localhost:{0}",
                g.addr.port()
            )),
        ));
    }
    if let Some(origin) = header_str(h, header::ORIGIN) {
        let ok = origin
            .strip_prefix("http://")
            .is_some_and(|rest| g.host_ok(rest));
        if !ok {
            return Err((
                StatusCode::FORBIDDEN,
                Error::new(
                    crate::ErrorKind::ForeignOrigin,
                    format!("requests from {origin:?} are refused"),
                )
                .with("origin", origin)
                .hint("only pages hangar serves itself may call its API from a browser"),
            ));
        }
    }
    Ok(())
}

/// Checks before any GraphQL request runs.
async fn gate(State(g): State<Gate>, req: Request, next: Next) -> Response {
    let h = req.headers();
    if let Err((status, e)) = check_origin(&g, h) {
        return refuse(status, e);
    }
    let bearer = header_str(h, header::AUTHORIZATION).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    let ok = bearer.is_some_and(|t| g.auth.token_ok(t.trim()))
        || cookie(h, COOKIE).is_some_and(|s| g.auth.session_ok(s));
    if !ok {
        return refuse(
            StatusCode::UNAUTHORIZED,
            Error::new(
                crate::ErrorKind::Unauthenticated,
                "this request carries no valid API token or session",
            )
            .hint(format!(
                "send `Authorization: Bearer TOKEN` with the token in the data dir's {TOKEN_FILE}, or log in with the URL `hangar dashboard` prints"
            )),
        );
    }
    next.run(req).await
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    token: String,
}

/// `GET /login?token=TOKEN`: a session cookie, then the dashboard.
async fn login(
    State(g): State<Gate>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    if let Err((status, e)) = check_origin(&g, &headers) {
        return refuse(status, e);
    }
    if !g.auth.token_ok(q.token.trim()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            Error::new(crate::ErrorKind::Unauthenticated, "the login token is wrong")
                .hint(format!("use the URL `hangar dashboard` prints, or the token in the data dir's {TOKEN_FILE}")),
        );
    }
    match g.auth.open_session() {
        Ok(id) => Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, "/")
            .header(
                header::SET_COOKIE,
                format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/"),
            )
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            Error::new(
                crate::ErrorKind::TokenUnusable,
                format!("cannot make a session: {e}"),
            ),
        ),
    }
}

async fn schema_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], sdl()).into_response()
}

/// The GraphQL routes for the listener at `addr`; subscriptions end when
/// `stop` turns true.
pub fn router(d: Daemon, auth: Arc<Auth>, addr: SocketAddr, stop: watch::Receiver<bool>) -> Router {
    let schema = build(Some(d), stop);
    let g = Gate { auth, addr };
    let http = GraphQL::new(schema.clone());
    let ws = GraphQLSubscription::new(schema);
    // One URL for all three: a WebSocket upgrade is a subscription.
    let endpoint = move |req: Request| {
        let (http, ws) = (http.clone(), ws.clone());
        async move {
            let upgrade = req
                .headers()
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            let r = if upgrade {
                ws.oneshot(req).await
            } else {
                http.oneshot(req).await
            };
            r.into_response()
        }
    };
    let guarded = Router::new()
        .route("/graphql", get(endpoint.clone()).post(endpoint))
        .route_layer(middleware::from_fn_with_state(g.clone(), gate));
    // The dashboard and GraphiQL: static files, but only under a Host that
    // names this listener (the pages then call /graphql, which checks all).
    let pages =
        crate::web::router().route_layer(middleware::from_fn_with_state(g.clone(), host_gate));
    Router::new()
        .route("/graphql/schema.graphql", get(schema_text))
        .route("/login", get(login))
        .with_state(g)
        .merge(guarded)
        .merge(pages)
}

/// `Host` (and `Origin`, when sent) must name this listener.
async fn host_gate(State(g): State<Gate>, req: Request, next: Next) -> Response {
    if let Err((status, e)) = check_origin(&g, req.headers()) {
        return refuse(status, e);
    }
    next.run(req).await
}
