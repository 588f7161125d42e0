//! Fuzzing of the safetensors weights reader on the stable toolchain: valid weights (a single
//! file with every dtype the reader knows and some it refuses, and a two-shard set with its
//! index) mutated (header numbers and strings, data floats, the length prefix, plain bytes;
//! the index's JSON too) and read through every reading method of [`Weights`]. Whatever the
//! bytes, every outcome must be `Ok` or `Err`, never a panic, and a tensor that reads has as
//! many values as its shape says.
//!
//! Cases: `PHI3V_FUZZ_CASES` (default 512, a few seconds). A long run:
//!
//! ```text
//! PHI3V_FUZZ_CASES=20000 cargo test -p phi3v-nn --test integration fuzz_weights -- --nocapture
//! ```

// The edits are shared with the adapter fuzz test of phi3v-peft (phi3v-testkit, feature `fuzz`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use burn::backend::Flex;
use burn::tensor::FloatDType;
use phi3v_nn::weights::{save_f32, INDEX_FILE, SINGLE_FILE};
use phi3v_nn::Weights;
use phi3v_testkit::mutate::{apply_json, apply_safetensors, json_edits, safetensors_edits, Edit};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

type B = Flex;

fn config() -> Config {
    let cases = std::env::var("PHI3V_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    Config {
        cases,
        // No regression files written into the source tree; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

/// One file with a tensor of each dtype: f32 matrices, f16, bf16, f64, i64, i32, and a u8
/// tensor no reader accepts; with metadata.
fn single_file() -> Vec<u8> {
    let bytes = |values: Vec<Vec<u8>>| values.concat();
    let tensors: [(&str, Dtype, Vec<usize>, Vec<u8>); 7] = [
        (
            "layer.weight",
            Dtype::F32,
            vec![3, 4],
            bytes(
                (0..12)
                    .map(|i| (i as f32 * 0.5).to_le_bytes().to_vec())
                    .collect(),
            ),
        ),
        (
            "layer.bias",
            Dtype::F16,
            vec![6],
            bytes(
                (0..6)
                    .map(|i| half::f16::from_f32(i as f32).to_le_bytes().to_vec())
                    .collect(),
            ),
        ),
        (
            "norm.weight",
            Dtype::BF16,
            vec![2, 2],
            bytes(
                (0..4)
                    .map(|i| half::bf16::from_f32(-i as f32).to_le_bytes().to_vec())
                    .collect(),
            ),
        ),
        (
            "scale",
            Dtype::F64,
            vec![3],
            bytes((0..3).map(|i| (i as f64).to_le_bytes().to_vec()).collect()),
        ),
        (
            "ids",
            Dtype::I64,
            vec![2],
            bytes(
                (0..2)
                    .map(|i: i64| (i - 1).to_le_bytes().to_vec())
                    .collect(),
            ),
        ),
        (
            "positions",
            Dtype::I32,
            vec![1, 3],
            bytes(
                (0..3)
                    .map(|i: i32| (i * 7).to_le_bytes().to_vec())
                    .collect(),
            ),
        ),
        ("mask", Dtype::U8, vec![4], vec![1, 2, 3, 4]),
    ];
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        (*name, TensorView::new(*dtype, shape.clone(), data).unwrap())
    });
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize(views, metadata).unwrap()
}

/// Two shards and their index, as files in `dir`.
fn write_sharded(dir: &Path) {
    let one = |name: &str, shape: Vec<usize>| {
        let n = shape.iter().product::<usize>();
        (
            name.to_string(),
            (shape, (0..n).map(|i| i as f32).collect()),
        )
    };
    let shards = [
        (
            "s1.safetensors",
            vec![one("a.weight", vec![2, 3]), one("a.bias", vec![2])],
        ),
        ("s2.safetensors", vec![one("b.weight", vec![3, 2])]),
    ];
    let mut map = serde_json::Map::new();
    for (file, tensors) in shards {
        for (name, _) in &tensors {
            map.insert(name.clone(), file.into());
        }
        save_f32(&dir.join(file), &tensors.into_iter().collect(), None).unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 60}, "weight_map": map});
    std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
}

/// Opens `path` and reads every tensor every way; returns how far it got.
fn read_everything(path: &Path) -> &'static str {
    let Ok(mut weights) = Weights::open(path) else {
        return "open failed";
    };
    let device = Default::default();
    let names: Vec<String> = weights.names().into_iter().map(String::from).collect();
    weights.resolve_alias("alias", names.first().map_or("", String::as_str));
    let _ = weights.unused(&names[..names.len() / 2]);
    let _ = weights.files().count();
    let mut all_read = true;
    for dtype in [None, Some(FloatDType::BF16)] {
        weights.set_storage(dtype);
        for name in &names {
            let shape = weights.shape(name).unwrap().to_vec();
            let count: usize = shape.iter().product();
            match weights.read_f32(name, &shape) {
                Ok(values) => assert_eq!(values.len(), count, "`{name}` {shape:?}"),
                Err(_) => all_read = false,
            }
            if let Ok(values) = weights.read_i64(name, &shape) {
                assert_eq!(values.len(), count, "`{name}` {shape:?}");
            }
            // A wrong shape is an error, not a misread.
            let mut wrong = shape.clone();
            wrong.push(1);
            assert!(weights.read_f32(name, &wrong).is_err());
            match *shape.as_slice() {
                [n] => {
                    let _ = weights.tensor::<B, 1>(name, [n], &device);
                    let _ = weights.int_tensor::<B, 1>(name, [n], &device);
                }
                [rows, cols] => {
                    let _ = weights.matrix::<B>(name, [rows, cols], &device);
                    let _ = weights.linear_weight::<B>(name, cols, rows, &device);
                }
                _ => {}
            }
        }
    }
    if all_read {
        "every tensor read"
    } else {
        "opened, some tensors refused"
    }
}

/// Which file of the fixtures a case edits.
#[derive(Debug, Clone, Copy)]
enum Target {
    Single,
    Shard,
    Index,
}

#[test]
fn mutated_weights_are_refused_or_read_never_a_panic() {
    let single = single_file();
    let pristine = tempfile::tempdir().unwrap();
    write_sharded(pristine.path());
    let outcomes: Mutex<BTreeMap<String, usize>> = Mutex::default();
    let case = |target: Target, edits: &[Edit]| -> Result<&'static str, TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = match target {
            Target::Single => {
                let mut bytes = single.clone();
                edits.iter().for_each(|e| apply_safetensors(&mut bytes, e));
                let path = dir.path().join(SINGLE_FILE);
                std::fs::write(&path, bytes).unwrap();
                dir.path().to_path_buf()
            }
            Target::Shard | Target::Index => {
                for entry in std::fs::read_dir(pristine.path()).unwrap() {
                    let entry = entry.unwrap();
                    std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
                }
                let (file, apply): (&str, fn(&mut Vec<u8>, &Edit)) = match target {
                    Target::Shard => ("s1.safetensors", apply_safetensors),
                    _ => (INDEX_FILE, apply_json),
                };
                let mut bytes = std::fs::read(dir.path().join(file)).unwrap();
                edits.iter().for_each(|e| apply(&mut bytes, e));
                std::fs::write(dir.path().join(file), bytes).unwrap();
                dir.path().join(INDEX_FILE)
            }
        };
        let outcome = read_everything(&path);
        *outcomes
            .lock()
            .unwrap()
            .entry(format!("{target:?}: {outcome}"))
            .or_default() += 1;
        Ok(outcome)
    };
    // Unmutated, everything opens; the integer and u8 tensors are no floats.
    assert_eq!(
        case(Target::Single, &[]).unwrap(),
        "opened, some tensors refused"
    );
    assert_eq!(case(Target::Shard, &[]).unwrap(), "every tensor read");
    let edits = prop_oneof![
        safetensors_edits().prop_map(|e| (Target::Single, e)),
        safetensors_edits().prop_map(|e| (Target::Shard, e)),
        json_edits().prop_map(|e| (Target::Index, e)),
    ];
    TestRunner::new(config())
        .run(&edits, |(target, edits)| case(target, &edits).map(|_| ()))
        .unwrap();
    // Seen with --nocapture: cases per file and outcome.
    println!("outcomes: {:?}", outcomes.into_inner().unwrap());
}
