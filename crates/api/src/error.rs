//! The API's own error kinds (the service layer's travel unchanged).

hangar_base::error_kinds! {
    /// What can go wrong at the API's edges.
    pub enum ErrorKind {
        /// A listener cannot be opened (the address is taken, or not ours).
        ListenFailed = "API_LISTEN_FAILED": Conflict,
        /// The TLS files or settings are unusable.
        TlsInvalid = "API_TLS_INVALID": Invalid,
        /// A TCP listener without credentials, or a token in clear text off loopback.
        Insecure = "API_INSECURE": Invalid,
        /// A call without the right credentials.
        Unauthenticated = "UNAUTHENTICATED": Unauthenticated,
        /// The control socket (or its data dir) is not ours to open: only the
        /// daemon's user (and root) may connect.
        SocketPermissionDenied = "SOCKET_PERMISSION_DENIED": Unauthenticated,
        /// No daemon answers at the socket or address.
        DaemonNotRunning = "DAEMON_NOT_RUNNING": Unavailable,
        /// The daemon went away in the middle of a stream.
        DaemonGone = "DAEMON_GONE": Unavailable,
        /// A followed stream fell behind the daemon's events; resume from the
        /// last id received.
        EventsLost = "EVENTS_LOST": Exhausted,
        /// The API token file cannot be read or made, or holds no usable token.
        TokenUnusable = "API_TOKEN_UNUSABLE": Precondition,
        /// A browser request from a page hangar did not serve, or a `Host`
        /// that does not name the listener (DNS rebinding).
        ForeignOrigin = "FOREIGN_ORIGIN": Unauthenticated,
        /// The daemon serves no HTTP (metrics, GraphQL, the dashboard).
        HttpOff = "API_HTTP_OFF": Precondition,
    }
}
