//! Handing a URL to the user's browser (`hangar dashboard`). The one child
//! the CLI starts itself: not supervised (it is the user's desktop program,
//! started and left to run, as `xdg-open` would be from a shell), so it sits
//! apart, in this file alone, as an exception `tests/architecture.rs` names.

/// Open `url` in the user's browser when there is one to open it in: a
/// `$BROWSER`, or `xdg-open` under a graphical session. Quietly nothing
/// otherwise (the URL is printed).
pub fn open(url: &str) {
    let graphical = std::env::var_os("DISPLAY").is_some_and(|v| !v.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty());
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let program = match (browser, graphical) {
        (Some(b), _) => b,
        (None, true) => "xdg-open".to_string(),
        (None, false) => return,
    };
    // `$BROWSER` may be a list (`firefox:chromium`): the first one.
    let program = program.split(':').next().unwrap_or_default().to_string();
    let _ = std::process::Command::new(&program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}
