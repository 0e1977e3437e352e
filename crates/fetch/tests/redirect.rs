//! Redirects follow the same URL policy as the first request: a loopback
//! server that bounces to plain HTTP elsewhere is refused (before any
//! connection leaves the machine), one that bounces to another loopback path
//! is followed.

use std::time::Duration;

use hangar_fetch::{DownloadOptions, Downloader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn redirector() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    let me = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let me = me.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let resp = match path.as_str() {
                    "/away" => "HTTP/1.1 302 Found\r\nLocation: http://example.invalid/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    "/file" => "HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    "/near" => format!("HTTP/1.1 302 Found\r\nLocation: {me}/data\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                    "/data" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_string(),
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    base
}

fn downloader() -> Downloader {
    Downloader::new(DownloadOptions {
        attempts: 1,
        idle_timeout: Duration::from_secs(2),
        ..DownloadOptions::default()
    })
    .expect("downloader")
}

#[tokio::test]
async fn redirects_to_plain_http_elsewhere_or_to_files_are_refused() {
    let base = redirector().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let d = downloader();
    for path in ["/away", "/file"] {
        let part = tmp.path().join(format!("{}.part", &path[1..]));
        let err = d
            .fetch_to(&format!("{base}{path}"), &part, &|_| {})
            .await
            .expect_err("must refuse the redirect");
        // reqwest does not follow a redirect to file:// at all; the 302 then
        // ends the download as an HTTP error. Either way nothing is fetched.
        let refused = |e: &hangar_fetch::Error| {
            e.message().contains("redirect") || e.code() == "FETCH_HTTP_STATUS"
        };
        assert!(refused(&err), "{path}: {err}");
        assert_eq!(std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0), 0);
        let err = d
            .fetch_text(&format!("{base}{path}"), 1024)
            .await
            .expect_err("text too");
        assert!(refused(&err), "{path}: {err}");
    }
}

#[tokio::test]
async fn a_redirect_within_policy_is_followed() {
    let base = redirector().await;
    let d = downloader();
    assert_eq!(
        d.fetch_text(&format!("{base}/near"), 1024)
            .await
            .expect("follow"),
        "hello"
    );
}
