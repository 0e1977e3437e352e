//! Pages of List replies (`page_size`, `page_token`, `next_page_token`).
//!
//! Items are listed in order of their name; a token is the last name of the
//! page before, hex-encoded behind a version tag, so it stays opaque and a
//! page never repeats or skips an item that was there for both calls (one
//! added or removed between the calls shows or not, by its name). A size of
//! 0 means everything, which is what clients that know nothing of pages get.

use hangar_core::Error;
use tonic::Status;

use crate::convert::status;

const TAG: &str = "n1.";

/// Cut `items` (in order of `name`) to the page `token` and `size` ask for;
/// returns the page and the token of the next one (empty on the last page).
pub fn cut<T>(
    mut items: Vec<T>,
    name: impl Fn(&T) -> &str,
    size: u32,
    token: &str,
) -> Result<(Vec<T>, String), Status> {
    if !token.is_empty() {
        let after = decode(token).ok_or_else(|| {
            status(
                Error::new(
                    hangar_base::ErrorKind::Usage,
                    "page_token is not one this daemon gave",
                )
                .with("field", "page_token")
                .hint("pass next_page_token of the previous reply unchanged, or none for the first page"),
            )
        })?;
        let start = items.partition_point(|i| name(i) <= after.as_str());
        items.drain(..start);
    }
    let size = size as usize;
    if size == 0 || items.len() <= size {
        return Ok((items, String::new()));
    }
    items.truncate(size);
    let next = items.last().map(|i| encode(name(i))).unwrap_or_default();
    Ok((items, next))
}

fn encode(name: &str) -> String {
    let mut s = String::with_capacity(TAG.len() + name.len() * 2);
    s.push_str(TAG);
    for b in name.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode(token: &str) -> Option<String> {
    let hex = token.strip_prefix(TAG)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p-{i:03}")).collect()
    }

    /// Walking the pages yields every item once, in order, whatever the size.
    #[test]
    fn pages_cover_everything_once() {
        for size in [1, 2, 3, 7, 10, 11] {
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let (page, next) = cut(names(10), |s| s, size, &token).expect("page");
                assert!(page.len() <= size as usize);
                seen.extend(page);
                if next.is_empty() {
                    break;
                }
                token = next;
            }
            assert_eq!(seen, names(10), "size {size}");
        }
        let (all, next) = cut(names(10), |s| s, 0, "").expect("all");
        assert_eq!((all.len(), next.as_str()), (10, ""));
    }

    /// An item removed between two calls does not shift the next page.
    #[test]
    fn a_removed_item_skips_nothing() {
        let (_, token) = cut(names(10), |s| s, 4, "").expect("page");
        let mut fewer = names(10);
        fewer.remove(3); // p-003, the last one of the first page
        let (page, _) = cut(fewer, |s| s, 4, &token).expect("page");
        assert_eq!(page[0], "p-004");
    }

    /// A token that is not ours is INVALID_ARGUMENT naming the field.
    #[test]
    fn a_foreign_token_is_refused() {
        for bad in ["xyz", "n1.zz", "n1.abc", "n1.ff"] {
            let e = cut(names(3), |s| s, 2, bad).expect_err(bad);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
