//! Adapters leave and re-enter the model intact: PEFT export then import gives identical
//! outputs, a merged model dir equals the adapters applied at run time, files are written
//! atomically, and bad adapter files are errors that name the tensor.

use crate::common;

use common::{adapted, load, read_tensors, reference_plan, seeded_logits, tiny_spec, write_model};
use phi3v_nn::NamedLinears;
use phi3v_peft::io::{save_tensors, write_atomic};
use phi3v_peft::peft::{export_peft, import_peft, ADAPTER_WEIGHTS};
use phi3v_peft::{AdapterPlan, PeftError};
use phi3v_testkit::max_diff;

/// The reference plan's adapters on the tiny model, checking that every target was found.
fn adapted_reference(base: &std::path::Path) -> (phi3v::Phi3V<common::B>, AdapterPlan) {
    let plan = reference_plan();
    let mut model = adapted(base, &plan);
    let mut count = 0;
    model.for_each_linear("", &mut |_, linear| {
        count += usize::from(linear.lora.is_some())
    });
    assert_eq!(
        count,
        2 * 4 + 1 + 2 * 6 + 2,
        "every reference target of the tiny model"
    );
    (model, plan)
}

#[test]
fn peft_export_then_import_gives_identical_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_model(tmp.path(), &tiny_spec());
    let (model, plan) = adapted_reference(&base);
    let with_adapters = seeded_logits(&model);
    let plain = seeded_logits(&load(&base));
    assert!(
        max_diff(&with_adapters, &plain) > 1e-3,
        "the adapters must change the outputs"
    );

    let adapter = tmp.path().join("adapter");
    export_peft(&model, &plan, Some("tiny".into()), &adapter).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(config["peft_type"], "LORA");
    let names = phi3v_nn::Weights::open(adapter.join(ADAPTER_WEIGHTS)).unwrap();
    // PEFT's names and PyTorch's layout: A is [r, in], B is [out, r].
    assert_eq!(
        names
            .shape("base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight")
            .unwrap(),
        &[4, 32]
    );
    assert_eq!(
        names
            .shape("base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight")
            .unwrap(),
        &[96, 4]
    );

    let mut reloaded = load(&base);
    import_peft(&mut reloaded, &adapter, &Default::default()).unwrap();
    // The same numbers, up to the summation order of the transposed factors' matmuls.
    let d = max_diff(&seeded_logits(&reloaded), &with_adapters);
    println!("export then import: max logit difference {d:e}");
    assert!(d < 1e-5, "imported adapters change the outputs by {d}");
}

#[test]
fn merged_model_dir_equals_runtime_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_model(tmp.path(), &tiny_spec());
    let (model, plan) = adapted_reference(&base);
    let adapter = tmp.path().join("adapter");
    export_peft(&model, &plan, None, &adapter).unwrap();
    let merged_dir = tmp.path().join("merged");
    let summary =
        phi3v_peft::merge_adapter(&base, &adapter, &merged_dir, Default::default()).unwrap();
    assert_eq!(summary.merged.len(), 23);
    assert!(
        merged_dir.join("config.json").is_file() && merged_dir.join("tokenizer.json").is_file()
    );
    let merged = load(&merged_dir);
    let d = max_diff(&seeded_logits(&merged), &seeded_logits(&model));
    println!("merged vs runtime adapters: max logit difference {d:e}");
    assert!(d < 1e-4, "merged logits differ by {d}");
}

#[test]
fn adapter_for_another_model_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_model(tmp.path(), &tiny_spec());
    let (model, plan) = adapted_reference(&base);
    let adapter = tmp.path().join("adapter");
    export_peft(&model, &plan, None, &adapter).unwrap();
    // A tensor for a layer the model does not have.
    let path = adapter.join(ADAPTER_WEIGHTS);
    let mut tensors = read_tensors(&path);
    tensors.insert(
        "base_model.model.model.layers.9.self_attn.qkv_proj.lora_A.weight".into(),
        (vec![4, 32], vec![0.0; 128]),
    );
    save_tensors(&path, &tensors).unwrap();
    let err = import_peft(&mut load(&base), &adapter, &Default::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("layers.9.self_attn.qkv_proj"), "{text}");

    // A target pattern that selects nothing is refused rather than training nothing.
    let typo = AdapterPlan {
        targets: vec!["qkv_projj".into()],
        ..plan
    };
    let err = typo
        .apply(&mut load(&base), &Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("qkv_projj"), "{err}");
}

#[test]
fn atomic_writes_keep_the_old_file_when_the_writer_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.json");
    std::fs::write(&path, "old").unwrap();
    let result = write_atomic(&path, |tmp_path| {
        std::fs::write(tmp_path, "half of the new conte").unwrap();
        Err(PeftError::Config("killed mid-write".into()))
    });
    assert!(result.is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    write_atomic(&path, |t| {
        std::fs::write(t, "new").map_err(|e| PeftError::io(t, e))
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    assert!(!tmp.path().join("state.json.tmp").exists());
    // Neither the failed write nor the good one leaves a temporary sibling behind.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.json"]);
}
