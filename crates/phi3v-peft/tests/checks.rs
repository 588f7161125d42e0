//! What a merge and an import refuse, each error naming its culprit: outputs that would
//! clobber an input or a non-empty folder (with every input byte-identical afterwards), and
//! adapters that disagree with their config or with the base model. And what they accept:
//! an adapter PEFT wrote, and per-module ranks and alphas.

use crate::common;

use phi3v_testkit::files::snapshot;

use std::path::{Path, PathBuf};

use common::{
    edit_config, edit_tensors, load, read_tensors, seeded_logits, small_adapter, tiny_spec,
    write_model,
};
use phi3v_nn::NamedLinears;
use phi3v_peft::{import_peft, merge_adapter, MergeOptions, PeftError, ADAPTER_CONFIG};
use phi3v_testkit::max_diff;

/// A tiny model dir and a small adapter of it, in one temporary folder.
struct Setup {
    tmp: tempfile::TempDir,
    base: PathBuf,
    adapter: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_model(tmp.path(), &tiny_spec());
    let adapter = small_adapter(tmp.path(), &base);
    Setup { tmp, base, adapter }
}

fn merge(s: &Setup, out: &Path, overwrite: bool) -> Result<phi3v_peft::MergeSummary, PeftError> {
    merge_adapter(&s.base, &s.adapter, out, MergeOptions { overwrite })
}

#[test]
fn merge_refuses_an_output_that_overlaps_an_input_and_touches_nothing() {
    let s = setup();
    let before = snapshot(s.tmp.path());
    let cases = [
        (s.base.clone(), "--out", "is", "--model"),
        (s.base.join("merged"), "--out", "is inside", "--model"),
        (s.adapter.clone(), "--out", "is", "--adapter"),
        (
            s.adapter.join("sub/merged"),
            "--out",
            "is inside",
            "--adapter",
        ),
        (s.tmp.path().to_path_buf(), "--out", "contains", "--model"),
        // The same folder spelled another way.
        (s.base.join("../base/."), "--out", "is", "--model"),
    ];
    for (out, flag, relation, input) in cases {
        for overwrite in [false, true] {
            let err = merge(&s, &out, overwrite).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{flag} {}", out.display()))
                    && err.contains(&format!("{relation} {input}")),
                "{}: {err}",
                out.display()
            );
            assert_eq!(snapshot(s.tmp.path()), before, "{} touched", out.display());
        }
    }
}

/// Writes a sharded checkpoint (index and two shards) of another model into `dir`.
fn stale_sharded_checkpoint(dir: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../phi3v/tests/data/tiny_phi3v");
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
}

#[test]
fn merge_into_a_stale_sharded_checkpoint_needs_overwrite_and_then_replaces_it_whole() {
    let s = setup();
    let out = s.tmp.path().join("out");
    stale_sharded_checkpoint(&out);
    let before = snapshot(s.tmp.path());
    let err = merge(&s, &out, false).unwrap_err().to_string();
    assert!(
        err.contains(&out.display().to_string()) && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(snapshot(s.tmp.path()), before);

    let summary = merge(&s, &out, true).unwrap();
    assert_eq!(
        summary.files,
        [out.canonicalize().unwrap().join("model.safetensors")]
    );
    // Exactly the base's files: no stale index or shard beside the new weights.
    let names = |dir: &Path| snapshot(dir).into_keys().collect::<Vec<_>>();
    assert_eq!(names(&out), names(&s.base));
    // The folder loads as the merge, not as the old checkpoint.
    let mut imported = load(&s.base);
    import_peft(&mut imported, &s.adapter, &Default::default()).unwrap();
    let d = max_diff(&seeded_logits(&load(&out)), &seeded_logits(&imported));
    assert!(d < 1e-4, "the merged folder's logits differ by {d}");
    // Nothing but the output was written beside it.
    let mut siblings: Vec<_> = std::fs::read_dir(s.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    siblings.sort();
    assert_eq!(siblings, ["adapter", "base", "out"]);
}

#[test]
fn a_merge_that_fails_while_writing_leaves_the_old_output_as_it_was() {
    let s = setup();
    // A base weight stored as integers passes the header checks but cannot be merged.
    let path = s.base.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let target = "model.layers.1.mlp.down_proj.weight";
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = if name == target {
                safetensors::Dtype::I32
            } else {
                view.dtype()
            };
            let view =
                safetensors::tensor::TensorView::new(dtype, view.shape().to_vec(), view.data())
                    .unwrap();
            (name, view)
        })
        .collect();
    let edited = safetensors::serialize(views, None).unwrap();
    drop(st);
    std::fs::write(&path, edited).unwrap();

    let out = s.tmp.path().join("out");
    stale_sharded_checkpoint(&out);
    let before = snapshot(s.tmp.path());
    let err = merge(&s, &out, true).unwrap_err().to_string();
    assert!(err.contains(target) && err.contains("I32"), "{err}");
    assert_eq!(
        snapshot(s.tmp.path()),
        before,
        "the failed merge left traces"
    );
}

/// The error of a merge (into a fresh folder, which must not appear) and of an import of
/// the adapter, each required to contain every one of `culprits`.
fn assert_refused(s: &Setup, culprits: &[&str]) {
    let out = s.tmp.path().join("merged");
    let err = merge(s, &out, false).unwrap_err().to_string();
    println!("merge: {err}");
    for c in culprits {
        assert!(err.contains(c), "merge error lacks `{c}`: {err}");
    }
    assert!(!out.exists(), "a refused merge wrote {}", out.display());
    let err = import_peft(&mut load(&s.base), &s.adapter, &Default::default())
        .unwrap_err()
        .to_string();
    println!("import: {err}");
    for c in culprits {
        assert!(err.contains(c), "import error lacks `{c}`: {err}");
    }
}

#[test]
fn a_zero_rank_is_refused() {
    let s = setup();
    edit_config(&s.adapter, |c| c["r"] = 0.into());
    assert_refused(&s, &[ADAPTER_CONFIG, "`r` is 0"]);
}

#[test]
fn a_rank_that_disagrees_with_the_tensors_is_refused() {
    let s = setup();
    // The tensors are rank 4; a config saying 2 would merge at twice the scale.
    edit_config(&s.adapter, |c| c["r"] = 2.into());
    assert_refused(
        &s,
        &[
            "adapter_model.safetensors",
            "lora_A.weight",
            "has rank 4",
            ADAPTER_CONFIG,
            "`r` = 2",
        ],
    );
}

#[test]
fn a_nan_alpha_is_refused() {
    let s = setup();
    // Python's json.dump writes NaN, which is not JSON.
    let path = s.adapter.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).unwrap();
    let nan = text.replace("\"lora_alpha\": 8.0", "\"lora_alpha\": NaN");
    assert_ne!(nan, text);
    std::fs::write(&path, nan).unwrap();
    assert_refused(&s, &[ADAPTER_CONFIG, "`lora_alpha`"]);
}

#[test]
fn an_unknown_target_module_is_refused() {
    let s = setup();
    edit_config(&s.adapter, |c| {
        c["target_modules"]
            .as_array_mut()
            .unwrap()
            .extend(["qkv_projj".into(), "gate_proj".into()])
    });
    assert_refused(
        &s,
        &[
            ADAPTER_CONFIG,
            "`target_modules`",
            "`qkv_projj`, `gate_proj`",
        ],
    );
}

#[test]
fn broken_tensors_are_refused_naming_them() {
    let qkv_a = "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight";
    let qkv_b = "base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight";

    let s = setup();
    edit_tensors(&s.adapter, |t| t.get_mut(qkv_b).unwrap().1[3] = f32::NAN);
    assert_refused(&s, &[qkv_b, "non-finite", "NaN"]);

    let s = setup();
    edit_tensors(&s.adapter, |t| {
        t.remove(qkv_b);
    });
    assert_refused(&s, &[qkv_a, "no lora_B partner"]);

    // A factor whose rank agrees with the config but whose other side does not fit the base.
    let s = setup();
    edit_tensors(&s.adapter, |t| {
        t.insert(qkv_a.into(), (vec![4, 16], vec![0.0; 64]));
    });
    assert_refused(&s, &[qkv_a, "[96, 16]", "[96, 32]"]);

    // Tensors that name no base tensor keep being refused.
    let s = setup();
    let ghost = "base_model.model.model.layers.9.self_attn.qkv_proj.lora_A.weight";
    edit_tensors(&s.adapter, |t| {
        t.insert(ghost.into(), (vec![4, 32], vec![0.0; 128]));
    });
    assert_refused(&s, &[ghost, "model.layers.9.self_attn.qkv_proj.weight"]);
}

/// An adapter written by PEFT itself (`scripts/make_lora_fixtures.py`) for the sharded bf16
/// fixture model passes both paths, including its factors on the CLIP layer that Phi-3-V
/// never runs (present in the weights, so merged; absent from the model, so skipped).
#[test]
fn an_adapter_written_by_peft_imports_and_merges() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let base = data.join("phi3v/tests/data/tiny_phi3v");
    let adapter = data.join("phi3v-train/tests/data/lora_step/adapter_init");
    let mut model = load(&base);
    let config = import_peft(&mut model, &adapter, &Default::default()).unwrap();
    assert_eq!((config.r, config.lora_alpha), (4, 8.0));
    let mut adapted = 0;
    model.for_each_linear("", &mut |_, l| adapted += usize::from(l.lora.is_some()));
    let tmp = tempfile::tempdir().unwrap();
    let summary =
        merge_adapter(&base, &adapter, &tmp.path().join("m"), Default::default()).unwrap();
    // The merge also folds in the 6 factors pairs of the unused CLIP layer.
    assert_eq!(summary.merged.len(), adapted + 6);
    assert_eq!(summary.files.len(), 2, "the shards keep their layout");
}

/// `rank_pattern` and `alpha_pattern` give one module its own rank and scale; import and
/// merge apply them alike.
#[test]
fn per_module_ranks_and_alphas_agree_between_import_and_merge() {
    let s = setup();
    let o_proj = "base_model.model.model.layers.0.self_attn.o_proj";
    // Keep rank 2 of o_proj's rank-4 factors: A's first two rows, B's first two columns.
    edit_tensors(&s.adapter, |t| {
        let a = t.get_mut(&format!("{o_proj}.lora_A.weight")).unwrap();
        *a = (vec![2, 32], a.1[..64].to_vec());
        let b = t.get_mut(&format!("{o_proj}.lora_B.weight")).unwrap();
        let values = b.1.chunks(4).flat_map(|row| row[..2].to_vec()).collect();
        *b = (vec![32, 2], values);
    });
    // Without the pattern, the config's r = 4 disagrees with the tensors.
    assert_refused(&s, &["o_proj.lora_A.weight", "has rank 2", "`r` = 4"]);
    edit_config(&s.adapter, |c| {
        c["rank_pattern"] = serde_json::json!({"layers.0.self_attn.o_proj": 2});
        c["alpha_pattern"] = serde_json::json!({"layers.0.self_attn.o_proj": 16.0});
    });
    let mut imported = load(&s.base);
    import_peft(&mut imported, &s.adapter, &Default::default()).unwrap();
    let mut seen = None;
    imported.for_each_linear("", &mut |name, linear| {
        if name == "model.layers.0.self_attn.o_proj" {
            let lora = linear.lora.as_ref().unwrap();
            seen = Some((lora.rank(), lora.scale));
        }
    });
    assert_eq!(seen, Some((2, 8.0)), "rank 2, scale 16 / 2");
    let out = s.tmp.path().join("merged");
    merge(&s, &out, false).unwrap();
    let d = max_diff(&seeded_logits(&load(&out)), &seeded_logits(&imported));
    assert!(d < 1e-4, "merged and imported logits differ by {d}");
    // And the merge did change o_proj.
    let name = "model.layers.0.self_attn.o_proj.weight";
    let merged = &read_tensors(&out.join("model.safetensors"))[name].1;
    let original = &read_tensors(&s.base.join("model.safetensors"))[name].1;
    assert!(max_diff(merged, original) > 1e-4);
}
