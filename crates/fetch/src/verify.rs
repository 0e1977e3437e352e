//! Verification: SHA-256 against a digest, a GNU `sha256sum` checksums file
//! or the `digest` GitHub's releases API gives each asset, compared in
//! constant time; minisign signatures of an asset; detached OpenPGP
//! signatures of a checksums file (pure Rust, `pgp`), by a pinned key.

use std::io::Read;
use std::path::Path;

use subtle::ConstantTimeEq;

use crate::error::{Error, ErrorKind, Result};

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parse 64 hex digits (either case).
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Find `file_name`'s digest in a checksums file in GNU `sha256sum` format:
/// `<hex>  <name>` (text mode) or `<hex> *<name>` (binary mode), optionally with
/// a leading `./` on the name; `\`-escaped lines and blank or `#` lines are
/// handled. Also accepts BSD style `SHA256 (name) = <hex>` and single-asset
/// digest files (`SHA2-256= <hex>`, `SHA256(name)= <hex>`).
pub fn find_in_checksums(text: &str, file_name: &str) -> Result<[u8; 32]> {
    let mut malformed = 0usize;
    // Every line for the asset is read: two that disagree are an error, not
    // "the first one wins" (a file listing the asset twice is damaged or made
    // to pass a check that stops at the first line).
    let mut found: Option<[u8; 32]> = None;
    let mut hit = |digest: &str| -> Result<()> {
        let d = parse_sha256(digest).ok_or_else(|| bad_digest(file_name))?;
        match found {
            Some(f) if f != d => Err(Error::new(
                ErrorKind::ChecksumInvalid,
                format!("the checksums file lists {file_name:?} twice with different digests"),
            )
            .with("asset", file_name)
            .with("first", hex(&f))
            .with("second", hex(&d))
            .hint("the checksums file is damaged or was tampered with; nothing was installed")),
            _ => {
                found = Some(d);
                Ok(())
            }
        }
    };
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        // A digest file for one asset (`openssl dgst` style, as Xray publishes):
        // `SHA2-256= <hex>` or `SHA256(<name>)= <hex>`.
        for prefix in ["SHA2-256=", "SHA256="] {
            if let Some(d) = line.strip_prefix(prefix) {
                hit(d)?;
            }
        }
        if let Some(rest) = line
            .strip_prefix("SHA256(")
            .or_else(|| line.strip_prefix("SHA2-256("))
        {
            if let Some((name, digest)) = rest.split_once(")= ") {
                if name == file_name {
                    hit(digest)?;
                }
                continue;
            }
        }
        // BSD format.
        if let Some(rest) = line.strip_prefix("SHA256 (") {
            if let Some((name, digest)) = rest.split_once(") = ") {
                if name == file_name {
                    hit(digest)?;
                }
                continue;
            }
        }
        // GNU format; a leading backslash means the name has escapes.
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(l) => (true, l),
            None => (false, line),
        };
        let Some((digest, rest)) = line.split_once(' ') else {
            malformed += 1;
            continue;
        };
        let name = match rest.as_bytes().first() {
            Some(b' ') | Some(b'*') => &rest[1..],
            _ => rest,
        };
        let name = if escaped {
            name.replace("\\n", "\n").replace("\\\\", "\\")
        } else {
            name.to_string()
        };
        let name = name.strip_prefix("./").unwrap_or(&name);
        if name == file_name {
            hit(digest)?;
        }
    }
    if let Some(d) = found {
        return Ok(d);
    }
    let mut e = Error::new(
        ErrorKind::ChecksumMissing,
        format!("the checksums file has no entry for {file_name:?}"),
    )
    .with("asset", file_name)
    .hint("the release may not publish this asset; check the version and the asset pattern");
    if malformed > 0 {
        e = e.with("malformed_lines", malformed);
    }
    Err(e)
}

fn bad_digest(name: &str) -> Error {
    Error::new(
        ErrorKind::ChecksumInvalid,
        format!("the checksum for {name:?} is not 64 hex digits"),
    )
    .hint("the checksums file is damaged or not in sha256sum format")
}

/// Check a computed digest against the expected one.
pub fn check_sha256(expected: &[u8; 32], actual: &[u8; 32], what: &str) -> Result<()> {
    // In constant time: where the digests differ is not leaked.
    if bool::from(expected.ct_eq(actual)) {
        return Ok(());
    }
    Err(Error::new(ErrorKind::ChecksumMismatch, format!("{what} does not match its checksum"))
        .with("expected", hex(expected))
        .with("actual", hex(actual))
        .hint("the download is corrupt or was tampered with; it was deleted. Try again, or check the source"))
}

/// Check that a minisign public key (the base64 line of `minisign.pub`) parses.
pub fn check_public_key(public_key_b64: &str) -> Result<()> {
    minisign_verify::PublicKey::from_base64(public_key_b64.trim())
        .map(drop)
        .map_err(|e| {
            Error::new(
                ErrorKind::SignatureInvalid,
                format!("invalid minisign public key: {e}"),
            )
            .hint("give the base64 line of minisign.pub (it starts with RW)")
        })
}

/// Verify a minisign signature (`.minisig` text) of a file with a public key
/// (the base64 line of `minisign.pub`). Reads the file in chunks for prehashed
/// signatures (the default since minisign 0.8); legacy ones are refused.
pub fn verify_minisign(path: &Path, public_key_b64: &str, signature: &str) -> Result<()> {
    let bad = |m: String| {
        Error::new(ErrorKind::SignatureInvalid, m)
            .with("file", path.display())
            .hint("the file or its signature was tampered with, or the manifest's public key is wrong")
    };
    let pk = minisign_verify::PublicKey::from_base64(public_key_b64.trim())
        .map_err(|e| bad(format!("invalid minisign public key: {e}")))?;
    let sig = minisign_verify::Signature::decode(signature)
        .map_err(|e| bad(format!("invalid minisign signature: {e}")))?;
    let mut v = pk
        .verify_stream(&sig)
        .map_err(|e| bad(format!("signature cannot be checked: {e}")))?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        v.update(&buf[..n]);
    }
    v.finalize()
        .map_err(|e| bad(format!("signature does not verify: {e}")))
}

/// The SHA-256 that GitHub's releases API gives `asset` in a release's JSON
/// (`GET /repos/{owner}/{repo}/releases/tags/{tag}`): the entry of `assets`
/// whose `name` is `asset`, its `digest` `"sha256:<hex>"`. GitHub computes it
/// when an asset is uploaded; assets uploaded before it did have `null`.
pub fn find_in_github_release(json: &str, asset: &str) -> Result<[u8; 32]> {
    let bad = |m: String| {
        Error::new(ErrorKind::ChecksumInvalid, m)
            .with("asset", asset)
            .hint("the releases API answered something else than a GitHub release; check source.api_base")
    };
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("the release is not JSON: {e}")))?;
    let assets = v
        .get("assets")
        .and_then(|a| a.as_array())
        .ok_or_else(|| bad("the release has no assets list".to_string()))?;
    let Some(entry) = assets
        .iter()
        .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(asset))
    else {
        return Err(Error::new(
            ErrorKind::ChecksumMissing,
            format!("the release has no asset {asset:?}"),
        )
        .with("asset", asset)
        .with("assets", assets.len())
        .hint("the release may not publish this asset; check the version and the asset pattern"));
    };
    let digest = entry.get("digest").and_then(|d| d.as_str());
    let Some(digest) = digest else {
        return Err(Error::new(
            ErrorKind::ChecksumMissing,
            format!("GitHub gives no digest for {asset:?}"),
        )
        .with("asset", asset)
        .hint("assets uploaded before GitHub computed digests have none: pin the asset's sha256 in the manifest (source.verification.pinned)"));
    };
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        Error::new(
            ErrorKind::ChecksumInvalid,
            format!("the digest of {asset:?} is not sha256:<hex>: {digest:?}"),
        )
        .with("asset", asset)
        .hint("hangar checks SHA-256 digests only")
    })?;
    parse_sha256(hex).ok_or_else(|| bad_digest(asset))
}

/// Upper-case hex of an OpenPGP fingerprint, spaces taken out (as people
/// write them: `EF6E 286D …`).
pub fn normalize_fingerprint(f: &str) -> String {
    f.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_start_matches("0x")
        .to_ascii_uppercase()
}

fn pgp_key(armored: &str, fingerprint: &str) -> Result<pgp::composed::SignedPublicKey> {
    use pgp::composed::Deserializable;
    use pgp::types::KeyDetails;
    let bad = |m: String| {
        Error::new(ErrorKind::SignatureInvalid, m)
            .hint("give the signer's armored public key (-----BEGIN PGP PUBLIC KEY BLOCK-----) and its primary key's fingerprint")
    };
    let (key, _) = pgp::composed::SignedPublicKey::from_string(armored.trim())
        .map_err(|e| bad(format!("not an OpenPGP public key: {e}")))?;
    key.verify().map_err(|e| {
        bad(format!(
            "the OpenPGP key's self-signatures do not verify: {e}"
        ))
    })?;
    let have = format!("{:X}", key.primary_key.fingerprint());
    let want = normalize_fingerprint(fingerprint);
    if have != want {
        return Err(Error::new(
            ErrorKind::SignatureInvalid,
            "the OpenPGP key is not the one the fingerprint names",
        )
        .with("fingerprint", want)
        .with("key_fingerprint", have)
        .hint("the pinned key and fingerprint must be the same signer's: fetch the key again from its publisher and compare"));
    }
    Ok(key)
}

/// Check that an armored OpenPGP public key parses, its self-signatures
/// verify, and its primary fingerprint is `fingerprint`.
pub fn check_openpgp_key(armored: &str, fingerprint: &str) -> Result<()> {
    pgp_key(armored, fingerprint).map(drop)
}

/// Verify a detached OpenPGP signature (armored, as in a `.asc` file; one or
/// more signatures, any of which may do) of `data` with the pinned key
/// (`armored` public key whose primary fingerprint is `fingerprint`): made by
/// its primary key or by one of its subkeys whose binding to the primary
/// verifies, that may sign, is not revoked and had not expired when the
/// signature was made. A revoked primary key verifies nothing.
pub fn verify_openpgp(
    data: &[u8],
    signature: &str,
    armored: &str,
    fingerprint: &str,
) -> Result<()> {
    use pgp::composed::{Deserializable, DetachedSignature};
    use pgp::packet::SignatureType;
    use pgp::types::{KeyDetails, PublicKeyTrait};
    let key = pgp_key(armored, fingerprint)?;
    let primary = &key.primary_key;
    let bad = |m: String| {
        Error::new(ErrorKind::SignatureInvalid, m)
            .with("fingerprint", normalize_fingerprint(fingerprint))
    };
    let (sigs, _) = DetachedSignature::from_string_many(signature.trim()).map_err(|e| {
        bad(format!("not an OpenPGP signature: {e}"))
            .hint("the signature file is damaged or is not an armored detached signature (.asc)")
    })?;
    if !key.details.revocation_signatures.is_empty() {
        return Err(bad("the pinned OpenPGP key is revoked".to_string())
            .hint("the publisher revoked this key: pin their new key"));
    }
    // Subkeys bound to the primary, with their newest binding; revoked ones
    // (and ones whose binding does not allow signing) are recognised, so
    // their signatures fail as such, not as a stranger's.
    let subkeys: Vec<(
        &pgp::composed::SignedPublicSubKey,
        Option<&pgp::packet::Signature>,
        bool,
    )> = key
        .public_subkeys
        .iter()
        .filter(|s| s.verify(primary).is_ok())
        .map(|s| {
            let revoked = s
                .signatures
                .iter()
                .any(|b| b.typ() == Some(SignatureType::SubkeyRevocation));
            let binding = s
                .signatures
                .iter()
                .filter(|b| b.typ() == Some(SignatureType::SubkeyBinding))
                .max_by_key(|b| b.created().copied());
            (s, binding, revoked)
        })
        .collect();
    let mut issuers = Vec::new();
    const TAMPERED: &str = "the signed file or its signature was changed after signing: the download was deleted; do not install it";
    const KEY_STATE: &str = "the signing subkey is no longer valid for this signature: if the publisher rotated keys, update the pinned key from the publisher and check its fingerprint";
    let mut last_err: Option<(String, &str)> = None;
    let mut seen = 0usize;
    for sig in sigs {
        let sig = sig.map_err(|e| {
            bad(format!("not an OpenPGP signature: {e}")).hint(
                "the signature file is damaged or is not an armored detached signature (.asc)",
            )
        })?;
        seen += 1;
        let ids: Vec<String> = sig
            .signature
            .issuer()
            .iter()
            .map(|k| hex(k.as_ref()).to_ascii_uppercase())
            .chain(
                sig.signature
                    .issuer_fingerprint()
                    .iter()
                    .map(|f| format!("{f:X}")),
            )
            .collect();
        let names = |k: &dyn KeyDetails| {
            let id = hex(k.key_id().as_ref()).to_ascii_uppercase();
            let fp = format!("{:X}", k.fingerprint());
            ids.iter().any(|i| *i == id || *i == fp)
        };
        let mut matched = false;
        if names(primary) {
            matched = true;
            match sig.verify(primary, data) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some((e.to_string(), TAMPERED)),
            }
        }
        for (sub, binding, revoked) in &subkeys {
            if names(&sub.key) {
                matched = true;
                if *revoked {
                    last_err = Some(("its signing subkey was revoked".to_string(), KEY_STATE));
                    continue;
                }
                let Some(binding) = binding.filter(|b| b.key_flags().sign()) else {
                    last_err = Some(("its subkey may not sign".to_string(), KEY_STATE));
                    continue;
                };
                // A subkey signs only while it is valid: a signature dated
                // after its expiry does not count.
                let expired = match (binding.key_expiration_time(), sig.signature.created()) {
                    (Some(d), Some(made)) if !d.is_zero() => *made > *sub.key.created_at() + *d,
                    _ => false,
                };
                if expired {
                    last_err = Some((
                        "it was made after the signing subkey expired".to_string(),
                        KEY_STATE,
                    ));
                    continue;
                }
                match sig.verify(&sub.key, data) {
                    Ok(()) => return Ok(()),
                    Err(e) => last_err = Some((e.to_string(), TAMPERED)),
                }
            }
        }
        if !matched {
            issuers.extend(ids);
        }
    }
    if seen == 0 {
        return Err(bad("the signature file holds no signature".to_string())
            .hint("the signature file is damaged or is not an armored detached signature (.asc)"));
    }
    match last_err {
        Some((e, hint)) => {
            Err(bad(format!("the OpenPGP signature does not verify: {e}")).hint(hint))
        }
        None => Err(bad("the file is signed by a key the manifest does not pin".to_string())
            .with("signed_by", issuers.join(", "))
            .hint("only the pinned key (its primary or a signing subkey) is accepted; if the publisher rotated keys, update the pinned key from the publisher")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn gnu_text_and_binary_markers() {
        let text = format!("{A}  demo-1.0-linux-amd64.tar.gz\n{A} *other.zip\n# comment\n\n");
        assert!(find_in_checksums(&text, "demo-1.0-linux-amd64.tar.gz").is_ok());
        assert!(find_in_checksums(&text, "other.zip").is_ok());
        let e = find_in_checksums(&text, "missing.tar.gz").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ChecksumMissing);
    }

    #[test]
    fn dot_slash_bsd_and_crlf() {
        let text = format!("{A}  ./a.tar.gz\r\nSHA256 (b.zip) = {A}\r\n");
        assert!(find_in_checksums(&text, "a.tar.gz").is_ok());
        assert!(find_in_checksums(&text, "b.zip").is_ok());
    }

    #[test]
    fn openssl_dgst_files() {
        let text = format!("MD5= 0123\nSHA1= 4567\nSHA2-256= {A}\nSHA2-512= 89ab\n");
        assert_eq!(
            hex(&find_in_checksums(&text, "Xray-linux-64.zip").unwrap()),
            A
        );
        let text = format!("SHA256(x.zip)= {A}\n");
        assert!(find_in_checksums(&text, "x.zip").is_ok());
    }

    /// An asset listed twice with different digests is refused whichever
    /// line comes first; listed twice the same, it is fine.
    #[test]
    fn conflicting_lines_for_the_asset_are_refused() {
        const B: &str = "0000000000000000000000000000000000000000000000000000000000000001";
        for text in [
            format!("{A}  a.tar.gz\n{B}  a.tar.gz\n"),
            format!("{B}  a.tar.gz\nSHA256 (a.tar.gz) = {A}\n"),
            format!("SHA2-256= {A}\nSHA2-256= {B}\n"),
        ] {
            let e = find_in_checksums(&text, "a.tar.gz").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ChecksumInvalid, "{text}");
        }
        let text = format!("{A}  a.tar.gz\n{A} *./a.tar.gz\n{B}  other\n");
        assert_eq!(hex(&find_in_checksums(&text, "a.tar.gz").unwrap()), A);
    }

    #[test]
    fn a_bad_digest_is_invalid_not_missing() {
        let e = find_in_checksums("abc  a.tar.gz\n", "a.tar.gz").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ChecksumInvalid);
    }

    #[test]
    fn mismatch_shows_both() {
        let a = parse_sha256(A).unwrap();
        let mut b = a;
        b[31] ^= 1;
        assert!(check_sha256(&a, &a, "x").is_ok());
        let e = check_sha256(&a, &b, "x").unwrap_err();
        assert_eq!(e.code(), "VERIFY_CHECKSUM_MISMATCH");
        assert!(e.context().iter().any(|(k, v)| *k == "expected" && v == A));
        assert!(e.context().iter().any(|(k, _)| *k == "actual"));
    }

    #[test]
    fn hex_round_trip() {
        let d = parse_sha256(&A.to_uppercase()).unwrap();
        assert_eq!(hex(&d), A);
        assert!(parse_sha256("zz").is_none());
    }
}
