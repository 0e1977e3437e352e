//! Serde for `Duration` and `Option<Duration>` fields, the one helper every
//! crate's configuration and specs use.
//!
//! Reading accepts a humantime string (`"250ms"`, `"30s"`, `"1m 30s"`,
//! surrounding spaces ignored) or an integer number of milliseconds (`250`).
//! Writing gives a humantime string ([`serialize`], through `humantime_serde`)
//! or, for data that was always stored as milliseconds, an integer
//! ([`serialize_ms`]).
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Settings {
//!     #[serde(with = "hangar_base::duration")]
//!     timeout: Duration,
//!     #[serde(default, with = "hangar_base::duration")]
//!     max_age: Option<Duration>,
//!     #[serde(
//!         serialize_with = "hangar_base::duration::serialize_ms",
//!         deserialize_with = "hangar_base::duration::deserialize"
//!     )]
//!     grace: Duration,
//! }
//!
//! let s: Settings =
//!     serde_json::from_str(r#"{"timeout": "1m 30s", "max_age": 500, "grace": "2s"}"#).unwrap();
//! assert_eq!(s.timeout, Duration::from_secs(90));
//! assert_eq!(s.max_age, Some(Duration::from_millis(500)));
//! assert_eq!(
//!     serde_json::to_string(&s).unwrap(),
//!     r#"{"timeout":"1m 30s","max_age":"500ms","grace":2000}"#
//! );
//! ```

use std::fmt;
use std::time::Duration;

use humantime_serde::re::humantime;
use humantime_serde::Serde;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Write a humantime string (`"1m 30s"`); `None` as none.
pub fn serialize<T, S>(d: &T, s: S) -> Result<S::Ok, S::Error>
where
    for<'a> Serde<&'a T>: Serialize,
    S: Serializer,
{
    humantime_serde::serialize(d, s)
}

/// Write an integer number of milliseconds (sub-millisecond parts dropped);
/// `None` as none.
pub fn serialize_ms<T: DurationField, S: Serializer>(d: &T, s: S) -> Result<S::Ok, S::Error> {
    d.serialize_ms(s)
}

/// Read a humantime string or an integer number of milliseconds.
pub fn deserialize<'de, T: DurationField, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    T::deserialize_field(d)
}

/// Read a humantime string only: for files people write, where a bare number
/// would leave its unit to guess (`reconcile_interval = 5`).
pub fn deserialize_text<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| de::Error::custom(format!("{s:?} is not a duration ({e}); write e.g. \"5s\"")))
}

/// The field types this module handles: `Duration` and `Option<Duration>`.
pub trait DurationField: Sized + private::Sealed {
    #[doc(hidden)]
    fn deserialize_field<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
    #[doc(hidden)]
    fn serialize_ms<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
}

mod private {
    pub trait Sealed {}
    impl Sealed for std::time::Duration {}
    impl Sealed for Option<std::time::Duration> {}
}

fn millis(d: &Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DurationField for Duration {
    fn deserialize_field<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrMillis)
    }

    fn serialize_ms<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(millis(self))
    }
}

impl DurationField for Option<Duration> {
    fn deserialize_field<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<Wire>::deserialize(d)?.map(|w| w.0))
    }

    fn serialize_ms<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(d) => s.serialize_some(&millis(d)),
            None => s.serialize_none(),
        }
    }
}

/// One present duration, for `Option<Duration>`.
struct Wire(Duration);

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrMillis).map(Wire)
    }
}

struct TextOrMillis;

impl Visitor<'_> for TextOrMillis {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"5s\" or \"250ms\", or a number of milliseconds")
    }

    fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(ms))
    }

    fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
        u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(ms), &self))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        humantime::parse_duration(s.trim()).map_err(|e| {
            E::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. \"5s\", \"250ms\" or a number of milliseconds"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Text {
        #[serde(with = "crate::duration")]
        d: Duration,
        #[serde(
            default,
            with = "crate::duration",
            skip_serializing_if = "Option::is_none"
        )]
        o: Option<Duration>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ms {
        #[serde(serialize_with = "serialize_ms", deserialize_with = "deserialize")]
        d: Duration,
        #[serde(
            default,
            serialize_with = "serialize_ms",
            deserialize_with = "deserialize"
        )]
        o: Option<Duration>,
    }

    #[test]
    fn reads_humantime_strings_and_integer_milliseconds() {
        let t: Text = serde_json::from_str(r#"{"d": " 1m 30s ", "o": 250}"#).expect("parse");
        assert_eq!(t.d, Duration::from_secs(90));
        assert_eq!(t.o, Some(Duration::from_millis(250)));
        let t: Text = serde_json::from_str(r#"{"d": 0, "o": null}"#).expect("parse");
        assert_eq!((t.d, t.o), (Duration::ZERO, None));
        let t: Text = serde_json::from_str(r#"{"d": "0s"}"#).expect("parse");
        assert_eq!((t.d, t.o), (Duration::ZERO, None));
        let m: Ms = serde_json::from_str(r#"{"d": "2s", "o": 1500}"#).expect("parse");
        assert_eq!(m.d, Duration::from_secs(2));
        assert_eq!(m.o, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn refuses_what_is_not_a_duration_naming_the_value() {
        for bad in [
            r#"{"d": "soon"}"#,
            r#"{"d": -5}"#,
            r#"{"d": 1.5}"#,
            r#"{"d": true}"#,
        ] {
            let e = serde_json::from_str::<Text>(bad)
                .expect_err(bad)
                .to_string();
            assert!(e.contains("duration"), "{bad}: {e}");
        }
        #[derive(Debug, Deserialize)]
        struct Written {
            #[serde(deserialize_with = "deserialize_text")]
            #[allow(dead_code)]
            d: Duration,
        }
        assert!(serde_json::from_str::<Written>(r#"{"d": 5}"#).is_err());
        assert!(serde_json::from_str::<Written>(r#"{"d": "5s"}"#).is_ok());
        let e = serde_json::from_str::<Text>(r#"{"d": "soon"}"#).expect_err("soon");
        assert!(e.to_string().contains("\"soon\""), "{e}");
    }

    #[test]
    fn writes_humantime_or_milliseconds_and_reads_it_back() {
        let t = Text {
            d: Duration::from_millis(1500),
            o: Some(Duration::from_secs(3600)),
        };
        let j = serde_json::to_string(&t).expect("ser");
        assert_eq!(j, r#"{"d":"1s 500ms","o":"1h"}"#);
        assert_eq!(serde_json::from_str::<Text>(&j).expect("back"), t);
        let m = Ms {
            d: Duration::from_micros(1500),
            o: None,
        };
        let j = serde_json::to_string(&m).expect("ser");
        assert_eq!(j, r#"{"d":1,"o":null}"#);
        let m = Ms {
            d: Duration::from_secs(2),
            o: Some(Duration::from_millis(7)),
        };
        let j = serde_json::to_string(&m).expect("ser");
        assert_eq!(j, r#"{"d":2000,"o":7}"#);
        assert_eq!(serde_json::from_str::<Ms>(&j).expect("back"), m);
    }
}
