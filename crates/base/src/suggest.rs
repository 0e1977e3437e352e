//! Did-you-mean: the known word closest to a misspelt one.
//!
//! ```
//! use hangar_base::suggest::closest;
//! assert_eq!(closest("instancs", ["name", "instances"]), Some("instances"));
//! assert_eq!(closest("zzz", ["name", "instances"]), None);
//! ```

/// The word of `known` closest to `word`, if close enough to be a typo: at
/// most two edits, or a quarter of the known word's length for long words.
pub fn closest<'k>(word: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.chars().count() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_thresholds() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("htp", ["http", "tcp"]), Some("http"));
        assert_eq!(closest("SIGTREM", ["SIGTERM", "SIGINT"]), Some("SIGTERM"));
        assert_eq!(closest("ready", ["started", "healthy"]), None);
    }
}
