//! The JSON forms of the values the tracking files store that JSON cannot hold as they
//! are: bytes (a thumbnail) and non-finite floats (a NaN loss).

/// Serde adapter: bytes as a standard padded base64 string, so an
/// [`EvalRow`](crate::EvalRow) thumbnail stays readable in JSON instead of becoming an array
/// of thousands of numbers. Decoding is strict (no whitespace, no URL-safe alphabet, canonical
/// padding), so a corrupted thumbnail is an error, not a silently different picture.
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// An `f64` whose JSON form survives NaN and infinities: finite values are JSON numbers, the
/// others the strings `"NaN"`, `"inf"`, `"-inf"` (JSON numbers cannot express them and
/// `serde_json` would write `null`, which then fails to read back as `f64`). `null` reads
/// back as NaN, for files written by tools that follow serde_json's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct JsonF64(pub f64);

impl serde::Serialize for JsonF64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        if value.is_finite() {
            serializer.serialize_f64(value)
        } else if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if value > 0.0 {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_str("-inf")
        }
    }
}

/// The JSON shapes a [`JsonF64`] may take.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonF64Repr {
    Number(f64),
    Text(String),
    Null(()),
}

impl<'de> serde::Deserialize<'de> for JsonF64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = match JsonF64Repr::deserialize(deserializer)? {
            JsonF64Repr::Number(v) => v,
            JsonF64Repr::Null(()) => f64::NAN,
            JsonF64Repr::Text(text) => match text.as_str() {
                "NaN" | "nan" => f64::NAN,
                "inf" | "Infinity" => f64::INFINITY,
                "-inf" | "-Infinity" => f64::NEG_INFINITY,
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "expected a number, \"NaN\", \"inf\" or \"-inf\", found {other:?}"
                    )))
                }
            },
        };
        Ok(JsonF64(value))
    }
}

/// Serde adapter for an `f64` field, through [`JsonF64`].
pub(crate) mod non_finite_f64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::JsonF64;

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        JsonF64(*value).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(JsonF64::deserialize(deserializer)?.0)
    }
}

/// Serde adapter for chart points `Vec<(u64, f64)>`: a NaN loss is a point a report must be
/// able to store and reload.
pub(crate) mod non_finite_points {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::JsonF64;

    pub fn serialize<S: Serializer>(
        points: &[(u64, f64)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(points.iter().map(|&(step, v)| (step, JsonF64(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(u64, f64)>, D::Error> {
        let points = Vec::<(u64, JsonF64)>::deserialize(deserializer)?;
        Ok(points.into_iter().map(|(step, v)| (step, v.0)).collect())
    }
}
