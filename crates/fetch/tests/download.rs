//! `Downloader` against a real HTTP/1.1 server on 127.0.0.1: content and
//! digest, progress, resume with `Range` (within a run and from a `.part` left
//! by an earlier one), servers that ignore `Range`, 404, 503, stalls, and the
//! plain-HTTP policy.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use hangar_fetch::{check_url, DownloadOptions, Downloader, ErrorKind, Progress};
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn no_progress() -> impl Fn(&Progress) + Send + Sync {
    |_: &Progress| {}
}

#[tokio::test]
async fn downloads_bytes_and_digest_with_throttled_progress() {
    let server = Server::start().await;
    let body = pseudo_random(64 << 10, 1);
    // 32 pieces, 10 ms apart: about 320 ms of transfer.
    server.route(
        "/a.bin",
        Route {
            trickle: Some((2 << 10, Duration::from_millis(10))),
            ..Route::new(body.clone())
        },
    );
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a.bin.part");
    let seen: Mutex<Vec<(Instant, Progress)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let got = dl
        .fetch_to(&server.url("/a.bin"), &dest, &|p: &Progress| {
            seen.lock().unwrap().push((Instant::now(), p.clone()))
        })
        .await
        .unwrap();
    let elapsed = started.elapsed();

    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(got.bytes, body.len() as u64);
    assert_eq!(got.sha256, sha(&body));
    assert_eq!(got.path, dest);
    assert_eq!((got.resumed_from, got.attempts), (0, 1));

    let seen = seen.into_inner().unwrap();
    let (_, last) = seen.last().unwrap();
    assert!(last.done);
    assert_eq!(last.bytes, body.len() as u64);
    assert_eq!(last.total, Some(body.len() as u64));
    assert_eq!(
        seen.iter().filter(|(_, p)| p.done).count(),
        1,
        "one final report"
    );
    // Monotonic, and non-final reports at least progress_interval apart.
    let interval = opts().progress_interval;
    for w in seen.windows(2) {
        assert!(w[1].1.bytes >= w[0].1.bytes);
        if !w[1].1.done {
            assert!(
                w[1].0 - w[0].0 + Duration::from_millis(5) >= interval,
                "reports {:?} apart",
                w[1].0 - w[0].0
            );
        }
    }
    // At most one per interval over the transfer, plus the first and the last.
    let bound = (elapsed.as_millis() / interval.as_millis()) as usize + 2;
    assert!(seen.len() <= bound, "{} reports in {elapsed:?}", seen.len());
    assert!(
        seen.len() >= 3,
        "a 300 ms transfer reports along the way: {}",
        seen.len()
    );
    assert!(seen
        .iter()
        .any(|(_, p)| !p.done && p.bytes < body.len() as u64));

    let log = server.requests("/a.bin");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].range, None);
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_range() {
    let server = Server::start().await;
    let body = pseudo_random(100_000, 2);
    let n = 30_000;
    server.route(
        "/a.bin",
        Route {
            drop_after: Some(n),
            ..Route::new(body.clone())
        },
    );
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a.part");
    let last = Mutex::new(None);
    let got = dl
        .fetch_to(&server.url("/a.bin"), &dest, &|p: &Progress| {
            *last.lock().unwrap() = Some(p.clone())
        })
        .await
        .unwrap();

    let log = server.requests("/a.bin");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].range, None);
    assert_eq!(
        log[1].range.as_deref(),
        Some(format!("bytes={n}-").as_str())
    );
    // Not duplicated, not missing.
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(got.bytes, body.len() as u64);
    assert_eq!(got.sha256, sha(&body));
    assert_eq!(got.attempts, 2);
    assert_eq!(got.resumed_from, 0, "nothing was on disk before this run");
    let last = last.into_inner().unwrap().unwrap();
    assert!(last.done);
    assert_eq!(
        (last.bytes, last.total),
        (body.len() as u64, Some(body.len() as u64))
    );
}

#[tokio::test]
async fn a_part_from_an_earlier_run_is_resumed() {
    let server = Server::start().await;
    let body = pseudo_random(50_000, 3);
    server.file("/a.bin", body.clone());
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a.part");
    std::fs::write(&dest, &body[..12_345]).unwrap();

    let got = dl
        .fetch_to(&server.url("/a.bin"), &dest, &no_progress())
        .await
        .unwrap();
    assert_eq!(got.resumed_from, 12_345);
    assert_eq!(got.attempts, 1);
    assert_eq!(
        got.sha256,
        sha(&body),
        "the digest covers the part already on disk"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let log = server.requests("/a.bin");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].range.as_deref(), Some("bytes=12345-"));
}

#[tokio::test]
async fn a_complete_part_is_not_downloaded_again() {
    let server = Server::start().await;
    let body = pseudo_random(20_000, 4);
    server.file("/a.bin", body.clone());
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a.part");
    std::fs::write(&dest, &body).unwrap();

    // The server answers 416 with `bytes */20000`: the part is the file.
    let got = dl
        .fetch_to(&server.url("/a.bin"), &dest, &no_progress())
        .await
        .unwrap();
    assert_eq!(
        (got.bytes, got.resumed_from, got.attempts),
        (20_000, 20_000, 1)
    );
    assert_eq!(got.sha256, sha(&body));
    assert_eq!(server.requests("/a.bin").len(), 1);
}

#[tokio::test]
async fn a_server_that_ignores_range_still_yields_the_file() {
    let server = Server::start().await;
    let body = pseudo_random(40_000, 5);
    server.route(
        "/a.bin",
        Route {
            ignore_range: true,
            ..Route::new(body.clone())
        },
    );
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a.part");
    // A stale part that is not even a prefix of the file.
    std::fs::write(&dest, vec![0xAA; 7_000]).unwrap();

    let got = dl
        .fetch_to(&server.url("/a.bin"), &dest, &no_progress())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(got.bytes, body.len() as u64);
    assert_eq!(got.sha256, sha(&body));
    assert_eq!(got.resumed_from, 0, "the part was thrown away");
    let log = server.requests("/a.bin");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].range.as_deref(), Some("bytes=7000-"));
}

#[tokio::test]
async fn ignored_range_after_a_drop_starts_over_cleanly() {
    let server = Server::start().await;
    let body = pseudo_random(60_000, 6);
    server.route(
        "/a.bin",
        Route {
            drop_after: Some(25_000),
            ignore_range: true,
            ..Route::new(body.clone())
        },
    );
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a.part");
    let got = dl
        .fetch_to(&server.url("/a.bin"), &dest, &no_progress())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(got.sha256, sha(&body));
    assert_eq!(got.attempts, 2);
    let log = server.requests("/a.bin");
    assert_eq!(log[1].range.as_deref(), Some("bytes=25000-"));
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let server = Server::start().await;
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let e = dl
        .fetch_to(
            &server.url("/missing.tar.gz"),
            &tmp.path().join("m.part"),
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.code(), "FETCH_NOT_FOUND");
    assert_eq!(has_context(&e, "attempts").as_deref(), Some("1"));
    assert!(has_context(&e, "url").unwrap().ends_with("/missing.tar.gz"));
    assert_eq!(server.requests("/missing.tar.gz").len(), 1);

    let e = dl
        .fetch_text(&server.url("/missing.txt"), 1 << 10)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(server.requests("/missing.txt").len(), 1);
}

#[tokio::test]
async fn service_unavailable_is_retried() {
    let server = Server::start().await;
    let body = pseudo_random(5_000, 7);
    server.route(
        "/a.bin",
        Route {
            fail_first: 2,
            ..Route::new(body.clone())
        },
    );
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let got = dl
        .fetch_to(
            &server.url("/a.bin"),
            &tmp.path().join("a.part"),
            &no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(got.attempts, 3);
    assert_eq!(got.sha256, sha(&body));
    assert_eq!(server.requests("/a.bin").len(), 3);

    // And for small text files too.
    server.route(
        "/sums.txt",
        Route {
            fail_first: 2,
            ..Route::new("hello")
        },
    );
    assert_eq!(
        dl.fetch_text(&server.url("/sums.txt"), 100).await.unwrap(),
        "hello"
    );
    assert_eq!(server.requests("/sums.txt").len(), 3);
}

#[tokio::test]
async fn service_unavailable_for_ever_gives_up_after_the_attempts() {
    let server = Server::start().await;
    server.route(
        "/a.bin",
        Route {
            fail_first: 100,
            ..Route::new("x")
        },
    );
    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let e = dl
        .fetch_to(
            &server.url("/a.bin"),
            &tmp.path().join("a.part"),
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HttpStatus);
    assert!(e.message().contains("503"), "{}", e.message());
    assert_eq!(has_context(&e, "attempts").as_deref(), Some("3"));
    assert_eq!(server.requests("/a.bin").len(), 3);
}

#[tokio::test]
async fn a_stalled_body_times_out_after_the_attempts() {
    let server = Server::start().await;
    server.route(
        "/slow.bin",
        Route {
            stall: Some(Duration::from_secs(10)),
            ..Route::new(pseudo_random(1000, 8))
        },
    );
    let dl = Downloader::new(stall_opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let e = dl
        .fetch_to(
            &server.url("/slow.bin"),
            &tmp.path().join("s.part"),
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(has_context(&e, "attempts").as_deref(), Some("3"));
    assert_eq!(server.requests("/slow.bin").len(), 3);
    // 3 × idle_timeout (300 ms) + backoff, not the server's 10 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(850) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = Server::start().await;
    server.route(
        "/silent.bin",
        Route {
            stall_head: Some(Duration::from_secs(10)),
            ..Route::new("x")
        },
    );
    let dl = Downloader::new(DownloadOptions {
        attempts: 2,
        ..stall_opts()
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let e = dl
        .fetch_to(
            &server.url("/silent.bin"),
            &tmp.path().join("s.part"),
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(server.requests("/silent.bin").len(), 2);
    assert!(started.elapsed() < Duration::from_secs(3));

    let e = dl
        .fetch_text(&server.url("/silent.bin"), 100)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
}

#[tokio::test]
async fn plain_http_to_another_host_is_refused_before_connecting() {
    // Refused by policy before any name lookup or connection: nothing leaves.
    let e = check_url("http://example.invalid/x.tar.gz", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InsecureUrl);
    assert_eq!(e.code(), "FETCH_INSECURE_URL");
    assert!(e.hint_text().unwrap().contains("allow"));

    let dl = Downloader::new(opts()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("x.part");
    let e = dl
        .fetch_to("http://example.invalid/x.tar.gz", &dest, &no_progress())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InsecureUrl);
    assert!(!dest.exists(), "no part file for a refused URL");
    let e = dl
        .fetch_text("http://example.invalid/sums.txt", 100)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InsecureUrl);

    // Allowed when asked (only the policy is checked here: no connection).
    let url = check_url("http://example.invalid/x.tar.gz", true).unwrap();
    assert_eq!(url.host_str(), Some("example.invalid"));
    // Loopback needs no permission.
    for ok in [
        "http://127.0.0.1:1/x",
        "http://[::1]:1/x",
        "http://localhost:1/x",
        "http://127.8.9.10/x",
    ] {
        assert!(check_url(ok, false).is_ok(), "{ok}");
    }
    assert!(check_url("https://example.invalid/x", false).is_ok());
    for bad in ["ftp://example.invalid/x", "example.invalid/x", ""] {
        assert_eq!(
            check_url(bad, true).unwrap_err().kind(),
            ErrorKind::InvalidUrl,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn file_urls_are_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.bin");
    let body = pseudo_random(30_000, 9);
    std::fs::write(&src, &body).unwrap();
    let dest = tmp.path().join("dest.part");
    let last = Mutex::new(None);
    let dl = Downloader::new(opts()).unwrap();
    let got = dl
        .fetch_to(
            &format!("file://{}", src.display()),
            &dest,
            &|p: &Progress| *last.lock().unwrap() = Some(p.clone()),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(got.sha256, sha(&body));
    let last = last.into_inner().unwrap().unwrap();
    assert!(last.done && last.bytes == body.len() as u64);

    let e = dl
        .fetch_to(
            &format!("file://{}/nope", tmp.path().display()),
            &dest,
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}
