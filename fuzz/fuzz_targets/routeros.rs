//! The RouterOS API as a router answers it: length-prefixed words, sentences,
//! `!re` / `!done` / `!trap` / `!fatal` and `.tag`. Input: the router's bytes.
//! Sentences hold no empty word and no word over the limit; encoded words
//! read back as written; a command succeeds only on a `!done` carrying its
//! tag, and every attribute it returns was on the wire; a refused login never
//! repeats the password the router did not send.
#![no_main]

use hangar_net::fuzzing::{
    encode_len, encode_sentence, read_sentence, replay_command, replay_login,
};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "pw-Fuzz-7c1e";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    // Sentences straight off the wire.
    rt.block_on(async {
        let mut r = data;
        for _ in 0..64 {
            match read_sentence(&mut r).await {
                Ok(words) => {
                    for w in &words {
                        assert!(!w.is_empty(), "an empty word ends a sentence");
                        assert!(w.len() <= 3 * (16 << 20), "word over the limit");
                    }
                }
                Err(_) => break,
            }
        }
    });
    // Words cut from the input (at 0xFF bytes) encode and read back as written.
    let words: Vec<String> = data
        .split(|&b| b == 0xFF)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let enc = encode_sentence(&words);
    let back = rt
        .block_on(read_sentence(&mut &enc[..]))
        .expect("an encoded sentence reads");
    assert_eq!(words, back);
    let mut len = Vec::new();
    encode_len(data.len(), &mut len);
    assert!(!len.is_empty() && len.len() <= 5);

    // One command against the bytes as a router's answer.
    let cmd = vec!["/ip/address/print".to_string(), "?comment=x".to_string()];
    if let Ok((re, done)) = rt.block_on(replay_command(data, &cmd)) {
        assert!(contains(data, b"!done"), "succeeded without !done");
        assert!(
            contains(data, b".tag=1"),
            "succeeded without the command's tag"
        );
        let keys = re.iter().flat_map(|m| m.keys()).chain(done.keys());
        // Words are read lossily: a key with a replaced byte is not on the wire as such.
        for key in keys.filter(|k| !k.contains('\u{FFFD}')) {
            let word = format!("={key}");
            assert!(
                contains(data, word.as_bytes()),
                "attribute {key:?} not on the wire"
            );
        }
    }
    if let Err(e) = rt.block_on(replay_login(data, "admin", PASSWORD)) {
        if !contains(data, PASSWORD.as_bytes()) {
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains(PASSWORD),
                "the error shows the password: {shown}"
            );
        }
    }
});
