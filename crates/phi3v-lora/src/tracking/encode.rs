//! The two small encodings the tracking files need, written by hand so the crate does not
//! pull in a dependency for thirty lines each: CRC-32C for TFRecord framing and base64 for the
//! images embedded in `report.html` (and for thumbnails stored in JSON).

/// The reflected Castagnoli polynomial (0x1EDC6F41 bit-reversed), as used by iSCSI, ext4 and
/// TFRecord. It is *not* the zlib CRC-32 polynomial: TensorBoard rejects records framed with
/// the wrong one.
const CASTAGNOLI_REFLECTED: u32 = 0x82F6_3B78;

/// Byte-at-a-time lookup table, built at compile time.
const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CASTAGNOLI_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// CRC-32C (Castagnoli) of `data`: `crc32c(b"123456789") == 0xE306_9283`.
pub fn crc32c(data: &[u8]) -> u32 {
    let crc = data.iter().fold(!0u32, |crc, &b| {
        CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8)
    });
    !crc
}

/// TFRecord's masked CRC-32C. TensorFlow masks the CRC so that a CRC computed over data that
/// itself embeds CRCs does not degenerate; readers compare against the masked value.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 §4) with `=` padding, as `data:` URIs expect.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let triple = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (triple >> (18 - 6 * i)) & 0x3F;
                out.push(char::from(BASE64_ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why a base64 string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// The length is not a multiple of four (padding is required).
    #[error("base64 length {0} is not a multiple of 4")]
    Length(usize),
    /// A byte outside the alphabet, or `=` anywhere but the last two positions.
    #[error("invalid base64 byte {byte:#04x} at offset {offset}")]
    InvalidByte {
        /// Offset of the byte in the input.
        offset: usize,
        /// The byte itself.
        byte: u8,
    },
}

/// Decodes standard padded base64, the inverse of [`base64_encode`]. Strict: whitespace and
/// the URL-safe alphabet are rejected, so a corrupted thumbnail is an error, not a silently
/// different picture.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(Base64Error::Length(bytes.len()));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, quad) in bytes.chunks(4).enumerate() {
        let is_last = (index + 1) * 4 == bytes.len();
        decode_quad(quad, index * 4, is_last, &mut out)?;
    }
    Ok(out)
}

/// Decodes one group of four characters; padding is only accepted in the last group.
fn decode_quad(
    quad: &[u8],
    offset: usize,
    is_last: bool,
    out: &mut Vec<u8>,
) -> Result<(), Base64Error> {
    let padding = quad.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 || (padding > 0 && !is_last) {
        let at = 4 - padding;
        return Err(Base64Error::InvalidByte {
            offset: offset + at,
            byte: b'=',
        });
    }
    let mut triple = 0u32;
    for (i, &byte) in quad[..4 - padding].iter().enumerate() {
        let value = base64_value(byte).ok_or(Base64Error::InvalidByte {
            offset: offset + i,
            byte,
        })?;
        triple |= u32::from(value) << (18 - 6 * i);
    }
    let decoded = [(triple >> 16) as u8, (triple >> 8) as u8, triple as u8];
    out.extend_from_slice(&decoded[..3 - padding]);
    Ok(())
}

fn base64_value(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Serde adapter: bytes as a base64 string, so a [`crate::tracking::EvalRow`] thumbnail stays
/// readable in JSON instead of becoming an array of thousands of numbers.
pub(crate) mod base64_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::base64_encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::base64_decode(&text).map_err(serde::de::Error::custom)
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
