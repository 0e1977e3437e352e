//! Signatures the installer verifies: minisign (`verify_minisign`, prehashed)
//! and detached OpenPGP signatures (`verify_openpgp`, by a pinned key's
//! primary or signing subkey). Keys are made when the target starts: an
//! Ed25519 minisign key, and an OpenPGP key (Ed25519 primary that certifies
//! and signs, plus an Ed25519 signing subkey). Each input either signs its
//! data with one of them and then changes the signature text and/or the
//! data, or hands over a signature (and for OpenPGP also a key) of its own.
//!
//! Invariants: nothing panics; a signature verifies only the data it was
//! made for (a fresh one always does); no signature the target did not make
//! verifies under its keys; under the test key of minisign-verify (whose
//! known signatures are of the four bytes `test`) nothing else verifies;
//! every refusal is `VERIFY_SIGNATURE_INVALID` with a message.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use hangar_fetch::verify::{check_openpgp_key, check_public_key, verify_minisign, verify_openpgp};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pgp::composed::{
    DetachedSignature, KeyType, SecretKeyParamsBuilder, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::{KeyDetails, Password};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// minisign-verify's test key; its known signatures are of `test`.
const TEST_PK: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

struct Keys {
    dir: PathBuf,
    mini: SigningKey,
    mini_id: [u8; 8],
    mini_pk: String,
    pgp: SignedSecretKey,
    pgp_public: String,
    pgp_fpr: String,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("hangar-fuzz-sig")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("tmp")
            .keep();
        let mini = SigningKey::from_bytes(&[7u8; 32]);
        let mini_id = *b"hangarfz";
        let mut pk = b"Ed".to_vec();
        pk.extend_from_slice(&mini_id);
        pk.extend_from_slice(mini.verifying_key().as_bytes());
        let mini_pk = base64::engine::general_purpose::STANDARD.encode(&pk);

        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let params = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("Release Signer <signer@example.invalid>".into())
            .passphrase(None)
            .subkey(
                SubkeyParamsBuilder::default()
                    .key_type(KeyType::Ed25519Legacy)
                    .can_sign(true)
                    .passphrase(None)
                    .build()
                    .expect("subkey params"),
            )
            .build()
            .expect("key params");
        let pgp = params
            .generate(&mut rng)
            .expect("generate")
            .sign(&mut rng, &Password::empty())
            .expect("self-sign");
        let pgp_public = pgp
            .signed_public_key()
            .to_armored_string(None.into())
            .expect("armor");
        let pgp_fpr = format!("{:X}", pgp.primary_key.fingerprint());
        check_openpgp_key(&pgp_public, &pgp_fpr).expect("the made key is accepted");
        Keys {
            dir,
            mini,
            mini_id,
            mini_pk,
            pgp,
            pgp_public,
            pgp_fpr,
        }
    })
}

/// A prehashed minisign signature of `data` (what `minisign -S` writes).
fn minisign(k: &Keys, data: &[u8], trusted: &str) -> String {
    use blake2::Digest;
    let h = blake2::Blake2b512::digest(data);
    let sig = k.mini.sign(&h).to_bytes();
    let mut bin1 = b"ED".to_vec();
    bin1.extend_from_slice(&k.mini_id);
    bin1.extend_from_slice(&sig);
    let mut g = sig.to_vec();
    g.extend_from_slice(trusted.as_bytes());
    let global = k.mini.sign(&g).to_bytes();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    format!(
        "untrusted comment: signature from minisign secret key\n{}\ntrusted comment: {trusted}\n{}\n",
        b64(&bin1),
        b64(&global)
    )
}

fn openpgp(k: &Keys, data: &[u8], subkey: bool, seed: u64) -> String {
    let rng = ChaCha8Rng::seed_from_u64(seed);
    let sig = if subkey {
        DetachedSignature::sign_binary_data(
            rng,
            &k.pgp.secret_subkeys[0].key,
            &Password::empty(),
            HashAlgorithm::Sha256,
            data,
        )
    } else {
        DetachedSignature::sign_binary_data(
            rng,
            &k.pgp.primary_key,
            &Password::empty(),
            HashAlgorithm::Sha256,
            data,
        )
    };
    sig.expect("sign")
        .to_armored_string(None.into())
        .expect("armor")
}

fn check_refusal(e: &hangar_fetch::Error, what: &str) {
    assert_eq!(e.code(), "VERIFY_SIGNATURE_INVALID", "{what}: {e}");
    assert!(!e.message().is_empty(), "{what}");
}

fn minisign_verify(k: &Keys, data: &[u8], sig: &str, pk: &str) -> hangar_fetch::Result<()> {
    let path = k.dir.join("asset");
    std::fs::write(&path, data).expect("write the asset");
    verify_minisign(&path, pk, sig)
}

/// How the input changes a signature or the data.
#[derive(Arbitrary, Debug)]
enum Edit {
    Set(u16, u8),
    Insert(u16, u8),
    Remove(u16),
    Truncate(u16),
}

fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        let n = bytes.len();
        match *e {
            Edit::Set(i, b) if n > 0 => bytes[i as usize % n] = b,
            Edit::Insert(i, b) => bytes.insert(i as usize % (n + 1), b),
            Edit::Remove(i) if n > 0 => {
                bytes.remove(i as usize % n);
            }
            Edit::Truncate(i) => bytes.truncate(i as usize % (n + 1)),
            _ => {}
        }
    }
}

/// What an input asks for: its first byte picks the case, the rest are
/// parts split at the first NULs (so the seeds are readable text).
#[derive(Debug)]
enum Case {
    /// Sign `data` (minisign, OpenPGP primary, OpenPGP subkey) with
    /// `trusted` as minisign's trusted comment, then apply the edits (in
    /// arbitrary's format) to the signature text and to the data.
    Made {
        scheme: u8,
        data: Vec<u8>,
        trusted: String,
        sig_edits: Vec<Edit>,
        data_edits: Vec<Edit>,
    },
    /// A minisign signature and key of the input's own.
    RawMinisign {
        sig: String,
        key: String,
        data: Vec<u8>,
    },
    /// An OpenPGP signature of the input's own, against the made key or a
    /// key (and fingerprint) of the input's own.
    RawOpenpgp {
        sig: String,
        key: Option<(String, String)>,
        data: Vec<u8>,
    },
}

fn parse(bytes: &[u8]) -> Option<Case> {
    let (&sel, rest) = bytes.split_first()?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    Some(match sel % 5 {
        0..=2 => {
            let mut p = rest.splitn(3, |b| *b == 0);
            let data = p.next()?.to_vec();
            let trusted = text(p.next().unwrap_or_default())?;
            let mut u = Unstructured::new(p.next().unwrap_or_default());
            let sig_edits = Vec::<Edit>::arbitrary(&mut u).ok()?;
            let data_edits = Vec::<Edit>::arbitrary_take_rest(u).ok()?;
            Case::Made {
                scheme: sel % 5,
                data,
                trusted,
                sig_edits,
                data_edits,
            }
        }
        3 => {
            let mut p = rest.splitn(3, |b| *b == 0);
            Case::RawMinisign {
                sig: text(p.next()?)?,
                key: text(p.next().unwrap_or_default())?,
                data: p.next().unwrap_or_default().to_vec(),
            }
        }
        _ => {
            let mut p = rest.splitn(4, |b| *b == 0);
            let sig = text(p.next()?)?;
            let data = p.next().unwrap_or_default().to_vec();
            let key = match (p.next(), p.next()) {
                (Some(k), Some(f)) => Some((text(k)?, text(f)?)),
                _ => None,
            };
            Case::RawOpenpgp { sig, key, data }
        }
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Some(case) = parse(bytes) else {
        return;
    };
    let k = keys();
    match case {
        Case::Made {
            scheme,
            data,
            trusted,
            sig_edits,
            data_edits,
        } => {
            // A trusted comment is one line (minisign writes it so).
            if trusted.contains(['\n', '\r']) {
                return;
            }
            let sig = match scheme % 3 {
                0 => minisign(k, &data, &trusted),
                s => openpgp(k, &data, s == 2, data.len() as u64),
            };
            let mut sig2 = sig.clone().into_bytes();
            apply(&mut sig2, &sig_edits);
            let Ok(sig2) = String::from_utf8(sig2) else {
                return;
            };
            let mut data2 = data.clone();
            apply(&mut data2, &data_edits);
            let verify = |d: &[u8], s: &str| match scheme % 3 {
                0 => minisign_verify(k, d, s, &k.mini_pk),
                _ => verify_openpgp(d, s, &k.pgp_public, &k.pgp_fpr),
            };
            if let Err(e) = verify(&data, &sig) {
                panic!("a fresh signature does not verify: {e}\n{sig}");
            }
            match verify(&data2, &sig2) {
                Ok(()) => assert!(
                    data2 == data,
                    "a signature verifies data it was not made for\n{sig2}"
                ),
                Err(e) => check_refusal(&e, "changed"),
            }
            if scheme % 3 == 0 {
                // The test key never signed this.
                if let Ok(()) = minisign_verify(k, &data2, &sig2, TEST_PK) {
                    panic!("our signature verifies under another key");
                }
            }
        }
        Case::RawMinisign { sig, key, data } => {
            if let Err(e) = check_public_key(&key) {
                check_refusal(&e, "key");
            }
            for pk in [k.mini_pk.as_str(), TEST_PK, key.as_str()] {
                match minisign_verify(k, &data, &sig, pk) {
                    Ok(()) if pk == k.mini_pk => panic!("a signature not made here verifies"),
                    Ok(()) if pk == TEST_PK => {
                        assert_eq!(data, b"test", "forged under the test key")
                    }
                    Ok(()) => {}
                    Err(e) => check_refusal(&e, "raw minisign"),
                }
            }
        }
        Case::RawOpenpgp { sig, key, data } => {
            if verify_openpgp(&data, &sig, &k.pgp_public, &k.pgp_fpr).is_ok() {
                panic!("a signature not made here verifies");
            }
            if let Some((armored, fpr)) = key {
                if let Err(e) = check_openpgp_key(&armored, &fpr) {
                    check_refusal(&e, "raw key");
                }
                match verify_openpgp(&data, &sig, &armored, &fpr) {
                    Ok(()) => {
                        // Only a key that passes its own checks verifies.
                        check_openpgp_key(&armored, &fpr).expect("verified by a key it refuses");
                    }
                    Err(e) => check_refusal(&e, "raw OpenPGP"),
                }
            }
        }
    }
});
