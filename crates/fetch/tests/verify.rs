//! `verify`: minisign with the test vectors of minisign-verify 0.3.0 (its
//! doc example and `verify_prehashed` test: prehashed signatures of the four
//! bytes "test"; its `verify` test: a legacy signature of the same), and the
//! checksums-file parser on a realistic file.

use std::path::PathBuf;

use hangar_fetch::verify::{check_sha256, find_in_checksums, hex, parse_sha256, verify_minisign};
use hangar_fetch::ErrorKind;

const PK: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

/// From minisign-verify's `verify_prehashed` test.
const SIG_PREHASHED: &str = "untrusted comment: signature from minisign secret key
RUQf6LRCGA9i559r3g7V1qNyJDApGip8MfqcadIgT9CuhV3EMhHoN1mGTkUidF/z7SrlQgXdy8ofjb7bNJJylDOocrCo8KLzZwo=
trusted comment: timestamp:1556193335\tfile:test
y/rUw2y8/hOUYjZU71eHp/Wo1KZ40fGy2VJEDl34XMJM+TX48Ss/17u3IvIfbVR1FkZZSNCisQbuQY+bHwhEBg==
";

/// From minisign-verify's crate docs: same signature, another trusted comment.
const SIG_PREHASHED_DOC: &str = "untrusted comment: signature from minisign secret key
RUQf6LRCGA9i559r3g7V1qNyJDApGip8MfqcadIgT9CuhV3EMhHoN1mGTkUidF/z7SrlQgXdy8ofjb7bNJJylDOocrCo8KLzZwo=
trusted comment: timestamp:1633700835\tfile:test\tprehashed
wLMDjy9FLAuxZ3q4NlEvkgtyhrr0gtTu6KC4KBJdITbbOeAi1zBIYo0v4iTgt8jJpIidRJnp94ABQkJAgAooBQ==";

/// From minisign-verify's `verify` test: a legacy (not prehashed, `Ed`) signature.
const SIG_LEGACY: &str = "untrusted comment: signature from minisign secret key
RWQf6LRCGA9i59SLOFxz6NxvASXDJeRtuZykwQepbDEGt87ig1BNpWaVWuNrm73YiIiJbq71Wi+dP9eKL8OC351vwIasSSbXxwA=
trusted comment: timestamp:1555779966\tfile:test
QtKMXWyYcwdpZAlPF7tE2ENJkRd1ujvKjlj1m9RtHTBnZPa5WKU5uWRs5GoP5M/VqE81QFuMKI5k/SfNQUaOAA==
";

fn message(dir: &tempfile::TempDir, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join("test");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn prehashed_signatures_verify() {
    let dir = tempfile::tempdir().unwrap();
    let p = message(&dir, b"test");
    verify_minisign(&p, PK, SIG_PREHASHED).unwrap();
    verify_minisign(&p, PK, SIG_PREHASHED_DOC).unwrap();
    // Surrounding whitespace in the key (as copied from minisign.pub) is fine.
    verify_minisign(&p, &format!("  {PK}\n"), SIG_PREHASHED).unwrap();
}

#[test]
fn a_tampered_file_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    for bytes in [&b"Test"[..], b"test\n", b"tes", b""] {
        let p = message(&dir, bytes);
        let e = verify_minisign(&p, PK, SIG_PREHASHED).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SignatureInvalid, "{bytes:?}");
        assert_eq!(e.code(), "VERIFY_SIGNATURE_INVALID");
        assert_eq!(e.context()[0], ("file", p.display().to_string()));
        assert!(e.hint_text().is_some());
    }
}

#[test]
fn a_tampered_trusted_comment_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let p = message(&dir, b"test");
    let sig = SIG_PREHASHED.replace("1556193335", "1556193336");
    assert_eq!(
        verify_minisign(&p, PK, &sig).unwrap_err().kind(),
        ErrorKind::SignatureInvalid
    );
}

#[test]
fn legacy_signatures_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = message(&dir, b"test");
    let e = verify_minisign(&p, PK, SIG_LEGACY).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureInvalid);
    assert!(e.message().contains("legacy"), "{}", e.message());
}

#[test]
fn malformed_keys_and_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let p = message(&dir, b"test");
    for (key, sig) in [
        ("not a key", SIG_PREHASHED),
        ("", SIG_PREHASHED),
        (PK, "not a signature"),
        (PK, ""),
    ] {
        let e = verify_minisign(&p, key, sig).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SignatureInvalid, "{key:?} {sig:?}");
    }
    // A well-formed key with another key id.
    let other = PK.replace("i53", "i54");
    assert_eq!(
        verify_minisign(&p, &other, SIG_PREHASHED)
            .unwrap_err()
            .kind(),
        ErrorKind::SignatureInvalid
    );
    // A missing file is an I/O error, not a bad signature.
    let e = verify_minisign(&dir.path().join("nope"), PK, SIG_PREHASHED).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
}

#[test]
fn checksums_files_in_the_wild() {
    let a = "a".repeat(64);
    let b = "B".repeat(64);
    let c = "0123456789abcdef".repeat(4);
    let text = format!(
        "# sha256sum output\n\n{a}  tool-1.0-linux-amd64.tar.gz\n{b} *tool-1.0-linux-arm64.tar.gz\n\
         {c}  ./tool-1.0-darwin.zip\r\nSHA256 (tool-1.0.txz) = {a}\ngarbage\n"
    );
    let get = |n: &str| find_in_checksums(&text, n).map(|d| hex(&d));
    assert_eq!(get("tool-1.0-linux-amd64.tar.gz").unwrap(), a);
    assert_eq!(
        get("tool-1.0-linux-arm64.tar.gz").unwrap(),
        b.to_lowercase()
    );
    assert_eq!(get("tool-1.0-darwin.zip").unwrap(), c);
    assert_eq!(get("tool-1.0.txz").unwrap(), a);
    // A name is matched whole, not as a prefix or suffix.
    for n in ["tool-1.0-linux-amd64.tar", "linux-amd64.tar.gz", "tool", ""] {
        let e = get(n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ChecksumMissing, "{n:?}");
    }
    let e = get("nope.tar.gz").unwrap_err();
    assert_eq!(
        e.context()
            .iter()
            .find(|(k, _)| *k == "malformed_lines")
            .map(|(_, v)| v.as_str()),
        Some("1")
    );

    let x = parse_sha256(&a).unwrap();
    let mut y = x;
    y[0] ^= 0x80;
    assert!(check_sha256(&x, &x, "t").is_ok());
    let e = check_sha256(&x, &y, "t").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch);
}
