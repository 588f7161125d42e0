//! The walk over named linears visits every projection under its Hugging Face module name,
//! in the order LoRA draws fresh adapters in: decoder layers, `lm_head`, then the vision
//! tower's layers and the projection. Changing this order changes every seeded run.

use std::path::PathBuf;

use burn::backend::Flex;
use phi3v::nn::NamedLinears;
use phi3v::ModelDir;

#[test]
fn names_and_order_of_the_released_layout() {
    let dir = ModelDir {
        path: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_phi3v"),
    };
    let mut model = dir.load_model::<Flex>(&Default::default()).unwrap();
    let mut expected = Vec::new();
    for i in 0..2 {
        for name in [
            "self_attn.qkv_proj",
            "self_attn.o_proj",
            "mlp.gate_up_proj",
            "mlp.down_proj",
        ] {
            expected.push(format!("model.layers.{i}.{name}"));
        }
    }
    expected.push("lm_head".to_string());
    let vision = "model.vision_embed_tokens";
    for i in 0..2 {
        for name in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
        ] {
            expected.push(format!(
                "{vision}.img_processor.vision_model.encoder.layers.{i}.{name}"
            ));
        }
    }
    expected.push(format!("{vision}.img_projection.0"));
    expected.push(format!("{vision}.img_projection.2"));

    let mut names = Vec::new();
    model.for_each_linear("", &mut |name, _| names.push(name.to_string()));
    assert_eq!(names, expected);

    let mut prefixed = Vec::new();
    model.for_each_linear("base_model.model.", &mut |name, _| {
        prefixed.push(name.to_string())
    });
    assert_eq!(
        prefixed[0],
        "base_model.model.model.layers.0.self_attn.qkv_proj"
    );
}
