//! Checksums files (GNU `sha256sum`, BSD, `openssl dgst`) and GitHub release
//! answers. Input: asset name, a NUL byte, then the text. A digest found
//! for the asset is in the text as 64 hex digits; the lookup is
//! deterministic; `parse_sha256` accepts exactly 64 hex digits.
#![no_main]

use hangar_fetch::verify::{find_in_checksums, find_in_github_release, hex, parse_sha256};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // parse_sha256 on the whole input.
    if let Ok(s) = std::str::from_utf8(data) {
        match parse_sha256(s) {
            Some(d) => assert_eq!(hex(&d), s.trim().to_ascii_lowercase(), "{s:?}"),
            None => {
                let t = s.trim();
                assert!(
                    t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()),
                    "64 hex digits refused: {s:?}"
                );
            }
        }
    }
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (name, text) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let (Ok(name), Ok(text)) = (std::str::from_utf8(name), std::str::from_utf8(text)) else {
        return;
    };
    let lower = text.to_ascii_lowercase();
    let first = find_in_checksums(text, name);
    let second = find_in_checksums(text, name);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "not deterministic"),
        (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "not deterministic"),
        _ => panic!("not deterministic: {first:?} vs {second:?}"),
    }
    if let Ok(d) = first {
        assert!(
            lower.contains(&hex(&d)),
            "digest {} is not in the text",
            hex(&d)
        );
        // Found by name, unless the file is a single-asset digest file.
        let single = text.contains("SHA2-256=") || text.contains("SHA256=");
        let escaped = name.contains(['\n', '\\']);
        assert!(
            single || escaped || text.contains(name),
            "digest for {name:?} found, but the name is not in the text"
        );
    }
    if let Ok(d) = find_in_github_release(text, name) {
        // JSON may escape the digits: compare with the answer written plainly.
        let plain: serde_json::Value = serde_json::from_str(text).expect("it parsed once");
        let plain = plain.to_string().to_ascii_lowercase();
        assert!(
            plain.contains(&hex(&d)),
            "digest {} is not in the answer",
            hex(&d)
        );
    }
});
