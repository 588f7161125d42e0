//! Edits of safetensors files and JSON texts for the fuzz tests, as proptest strategies.
//!
//! Random bytes rarely get past a safetensors file's length prefix and JSON header, so most
//! edits here keep the structure and change what it says: a number of the header (a shape,
//! an offset) or a string (a dtype, a tensor name), with the length prefix fixed up; a float
//! of the data set to any bit pattern (NaN, infinities, huge values); a value of a JSON
//! settings file replaced by a hostile one (`0`, `-1`, `NaN`, `1e400`, a string). Plain byte
//! edits (bit flips, truncation, insertion, removal) cover the rest.
//!
//! Shared by the fuzz tests of phi3v-peft (adapter dirs) and phi3v-nn (weights), through
//! the kit's `fuzz` feature (proptest and std only, so the crates below the facade can use
//! it without a dependency cycle).

use proptest::prelude::*;

/// One edit. Positions and counts are taken modulo what the file has, so every edit
/// applies to every file.
#[derive(Debug, Clone)]
pub enum Edit {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// The `nth` number token of the JSON (the safetensors header's, or the whole text's)
    /// replaced by `value` (any JSON or non-JSON token).
    Number {
        nth: usize,
        value: String,
    },
    /// The `nth` string literal's contents replaced by `value`.
    Str {
        nth: usize,
        value: String,
    },
    /// The `at`-th 4-byte float of a safetensors file's data set to `bits`.
    Float {
        at: usize,
        bits: u32,
    },
    /// A safetensors file's header length prefix set to `value`.
    Length {
        value: u64,
    },
}

/// Numbers a safetensors header or a settings file might be made to hold.
const NUMBERS: [&str; 22] = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "8",
    "16",
    "-1",
    "0.5",
    "1.0",
    "0.999",
    "1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "null",
    "\"8\"",
    "[]",
];

/// Strings: dtypes, PEFT names and settings, module names right and wrong, regex syntax.
const STRINGS: [&str; 24] = [
    "",
    "F32",
    "F16",
    "BF16",
    "F64",
    "I64",
    "I32",
    "U8",
    "BOOL",
    "F8_E4M3",
    "F4",
    "__metadata__",
    "LORA",
    "LOHA",
    "none",
    "qkv_proj",
    "qkv_projj",
    "o_proj",
    "lm_head",
    "img_projection.2",
    "^.*proj$",
    "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight",
    "base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight",
    "model.layers.0.self_attn.o_proj.weight",
];

fn float_bits() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(f32::NAN.to_bits()),
        Just(f32::INFINITY.to_bits()),
        Just(f32::NEG_INFINITY.to_bits()),
        Just(f32::MAX.to_bits()),
        Just(1e30f32.to_bits()),
        any::<u32>(),
    ]
}

/// One plain byte edit (bit flip, byte write, truncation, insertion, removal), for any file.
pub fn byte_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Edit::SetByte { at, value }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Edit::Remove { at, len }),
    ]
}

fn json_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), prop::sample::select(&NUMBERS[..])).prop_map(|(nth, v)| Edit::Number {
            nth,
            value: v.to_string()
        }),
        (any::<usize>(), any::<u64>()).prop_map(|(nth, v)| Edit::Number {
            nth,
            value: v.to_string()
        }),
        (any::<usize>(), prop::sample::select(&STRINGS[..])).prop_map(|(nth, v)| Edit::Str {
            nth,
            value: v.to_string()
        }),
    ]
}

/// Edits for a safetensors file: mostly structured, some plain bytes.
pub fn safetensors_edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        3 => json_edit(),
        3 => (any::<usize>(), float_bits()).prop_map(|(at, bits)| Edit::Float { at, bits }),
        1 => prop_oneof![any::<u64>(), 0u64..4096].prop_map(|value| Edit::Length { value }),
        2 => byte_edit(),
    ];
    prop::collection::vec(edit, 1..4)
}

/// Edits for a JSON text.
pub fn json_edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![4 => json_edit(), 1 => byte_edit()];
    prop::collection::vec(edit, 1..4)
}

/// Applies `edit` to a safetensors file's bytes.
pub fn apply_safetensors(bytes: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Number { .. } | Edit::Str { .. } => {
            let Some(header) = header(bytes) else {
                return;
            };
            let text = String::from_utf8_lossy(&bytes[8..8 + header]).into_owned();
            let edited = edit_json(&text, edit);
            let mut out = (edited.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(edited.as_bytes());
            out.extend_from_slice(&bytes[8 + header..]);
            *bytes = out;
        }
        Edit::Float { at, bits } => {
            let Some(header) = header(bytes) else {
                return;
            };
            let data = bytes.len() - 8 - header;
            if data >= 4 {
                let start = 8 + header + (at % (data / 4)) * 4;
                bytes[start..start + 4].copy_from_slice(&bits.to_le_bytes());
            }
        }
        Edit::Length { value } => {
            if bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&value.to_le_bytes());
            }
        }
        other => apply_bytes(bytes, other),
    }
}

/// Applies `edit` to a JSON text's bytes.
pub fn apply_json(bytes: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Number { .. } | Edit::Str { .. } => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            *bytes = edit_json(&text, edit).into_bytes();
        }
        Edit::Float { .. } | Edit::Length { .. } => {}
        other => apply_bytes(bytes, other),
    }
}

/// The header length of a safetensors file, when its prefix is plausible.
fn header(bytes: &[u8]) -> Option<usize> {
    let prefix: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let n = usize::try_from(u64::from_le_bytes(prefix)).ok()?;
    (n <= bytes.len() - 8).then_some(n)
}

/// Applies a plain byte edit; the structured edits (numbers, strings, floats, lengths) are
/// left to [`apply_safetensors`] and [`apply_json`] and do nothing here.
pub fn apply_bytes(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len();
    match *edit {
        Edit::FlipBit { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
        Edit::SetByte { at, value } if len > 0 => bytes[at % len] = value,
        Edit::Truncate { at } => bytes.truncate(at % (len + 1)),
        Edit::Insert { at, bytes: ref new } => {
            let at = at % (len + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Edit::Remove { at, len: n } if len > 0 => {
            let at = at % len;
            bytes.drain(at..(at + n).min(len));
        }
        _ => {}
    }
}

/// A byte range `start..end` of a text.
type Span = (usize, usize);

/// The byte ranges of the number tokens and of the string contents of a JSON text
/// (outside strings a number is a run of `-+.0-9eE`; escapes inside strings are skipped).
fn tokens(text: &str) -> (Vec<Span>, Vec<Span>) {
    let bytes = text.as_bytes();
    let (mut numbers, mut strings) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i = start;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                strings.push((start, i.min(bytes.len())));
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                numbers.push((start, i));
            }
            _ => i += 1,
        }
    }
    (numbers, strings)
}

fn edit_json(text: &str, edit: &Edit) -> String {
    let (numbers, strings) = tokens(text);
    let (ranges, nth, value) = match edit {
        Edit::Number { nth, value } => (numbers, *nth, value),
        Edit::Str { nth, value } => (strings, *nth, value),
        _ => return text.to_string(),
    };
    if ranges.is_empty() {
        return text.to_string();
    }
    let (start, end) = ranges[nth % ranges.len()];
    // Ranges fall on ASCII bytes (quotes and digits), so they are char boundaries.
    format!("{}{value}{}", &text[..start], &text[end..])
}
