//! Fuzzing of the adapter readers on the stable toolchain: a valid adapter dir of a tiny
//! model, its `adapter_model.safetensors` (header and data) and `adapter_config.json`
//! mutated ([`common::mutate`]) and fed to [`check_adapter`], [`import_peft`] and
//! [`merge_adapter`]. Whatever the bytes, every outcome must be `Ok` or `Err`, never a panic;
//! an adapter that passes the check must merge (or fail only on a merged value that is not
//! finite); a merge that succeeds writes only finite weights; a merge that fails writes
//! nothing.
//!
//! Cases: `PHI3V_FUZZ_CASES` (default 256, a few seconds). A long run:
//!
//! ```text
//! PHI3V_FUZZ_CASES=10000 cargo test -p phi3v-peft --test integration fuzz_adapter -- --nocapture
//! ```

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{load, read_tensors, small_adapter, write_model, B};
use phi3v::Phi3V;
use phi3v_peft::{
    check_adapter, import_peft, merge_adapter, BaseTensors, MergeOptions, ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
};
use phi3v_testkit::mutate::{apply_json, apply_safetensors, json_edits, safetensors_edits, Edit};
use phi3v_testkit::TinySpec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn config() -> Config {
    let cases = std::env::var("PHI3V_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        // No regression files written into the source tree; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

/// The valid adapter dir the cases start from, and what the checks compare with.
struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    adapter: PathBuf,
    base_tensors: BaseTensors,
    model: Phi3V<B>,
    weights: Vec<u8>,
    config: Vec<u8>,
    /// How often each (check, import, merge) outcome occurred, to show that the cases
    /// reach past the first error.
    outcomes: Mutex<BTreeMap<[&'static str; 3], usize>>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        // As small as the model gets, so that each case's merge copies little.
        let spec = TinySpec {
            hidden_size: 8,
            intermediate_size: 16,
            num_attention_heads: 2,
            num_hidden_layers: 1,
            vision_hidden_size: 8,
            vision_intermediate_size: 16,
            vision_layers: 2,
            ..TinySpec::default()
        };
        let base = write_model(tmp.path(), &spec);
        let adapter = small_adapter(tmp.path(), &base);
        let read = |file: &str| std::fs::read(adapter.join(file)).unwrap();
        Self {
            base_tensors: BaseTensors::from_model_dir(&base).unwrap(),
            model: load(&base),
            weights: read(ADAPTER_WEIGHTS),
            config: read(ADAPTER_CONFIG),
            base,
            adapter,
            outcomes: Mutex::default(),
            _tmp: tmp,
        }
    }

    /// Writes the adapter with the edits applied into `dir/adapter`.
    fn write_adapter(&self, dir: &Path, weight_edits: &[Edit], config_edits: &[Edit]) -> PathBuf {
        let adapter = dir.join("adapter");
        std::fs::create_dir(&adapter).unwrap();
        let mut weights = self.weights.clone();
        for edit in weight_edits {
            apply_safetensors(&mut weights, edit);
        }
        let mut config = self.config.clone();
        for edit in config_edits {
            apply_json(&mut config, edit);
        }
        std::fs::write(adapter.join(ADAPTER_WEIGHTS), weights).unwrap();
        std::fs::write(adapter.join(ADAPTER_CONFIG), config).unwrap();
        adapter
    }

    /// One case: the three readers on the edited adapter, and what must hold between them.
    fn run(&self, weight_edits: &[Edit], config_edits: &[Edit]) -> Result<(), TestCaseError> {
        let case = tempfile::tempdir().unwrap();
        let adapter = self.write_adapter(case.path(), weight_edits, config_edits);
        let checked = check_adapter(&adapter, &self.base_tensors).map(|_| ());
        // Each import gets a model of its own.
        let imported = import_peft(&mut self.model.clone(), &adapter, &Default::default());
        let out = case.path().join("merged");
        let merged = merge_adapter(&self.base, &adapter, &out, MergeOptions::default());
        let word = |ok: bool| if ok { "ok" } else { "err" };
        let key = [
            word(checked.is_ok()),
            word(imported.is_ok()),
            word(merged.is_ok()),
        ];
        *self.outcomes.lock().unwrap().entry(key).or_default() += 1;
        match (&checked, &merged) {
            (_, Ok(summary)) => {
                prop_assert!(checked.is_ok(), "merged an adapter the check refuses");
                for file in &summary.files {
                    for (name, (_, values)) in read_tensors(file) {
                        prop_assert!(
                            values.iter().all(|v| v.is_finite()),
                            "merged `{name}` is not finite"
                        );
                    }
                }
            }
            (Ok(()), Err(e)) => {
                prop_assert!(
                    e.to_string().contains("not finite"),
                    "the check passed but the merge failed: {e}"
                );
            }
            (Err(_), Err(_)) => {}
        }
        if merged.is_err() {
            // Nothing written: no output folder, no staging folder beside it.
            let left: Vec<_> = std::fs::read_dir(case.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|name| name != "adapter")
                .collect();
            prop_assert!(left.is_empty(), "a failed merge left {left:?}");
        }
        Ok(())
    }
}

#[test]
fn mutated_adapters_are_refused_or_used_never_a_panic() {
    let fixture = Fixture::new();
    // Unmutated, the adapter merges.
    let out = tempfile::tempdir().unwrap();
    let summary = merge_adapter(
        &fixture.base,
        &fixture.adapter,
        &out.path().join("merged"),
        MergeOptions::default(),
    )
    .unwrap();
    assert_eq!((summary.merged.len(), summary.replaced.len()), (5, 2));
    let edits = prop_oneof![
        safetensors_edits().prop_map(|w| (w, Vec::new())),
        json_edits().prop_map(|c| (Vec::new(), c)),
        (safetensors_edits(), json_edits()),
    ];
    TestRunner::new(config())
        .run(&edits, |(weights, config)| fixture.run(&weights, &config))
        .unwrap();
    // Seen with --nocapture: cases per [check, import, merge] outcome.
    println!("outcomes: {:?}", fixture.outcomes.lock().unwrap());
}
