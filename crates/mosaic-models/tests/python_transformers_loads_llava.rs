//! The other direction: a LLaVA mosaic saves (here with weights changed from the fixture's, as training changes
//! them) loads in transformers with mosaic's logits (within 1e-4) and greedy generations. Needs the reference venv
//! (`../shared/tools/setup-reference-env.sh`), so it is ignored by default; `.ci/run` runs it when the venv
//! exists. `MOSAIC_REFERENCE_PYTHON` names its python (default `~/.cache/mosaic-refenv/bin/python`).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use mosaic_models::{GenerationConfig, Llava};

fn python() -> PathBuf {
    std::env::var_os("MOSAIC_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/mosaic-refenv/bin/python")
        })
}

#[test]
#[ignore = "needs the reference Python (transformers)"]
fn transformers_loads_a_llava_mosaic_saved_with_mosaic_outputs() {
    let fixtures = common::fixtures();
    let model = "tiny-llava";
    let llava = Llava::from_folder(&fixtures.join("models").join(model), 0, &Device::Cpu).unwrap();
    // Weights of our own: every projector and LM-head weight moved, as a training run would.
    for (name, var) in llava.params.all() {
        if name.contains("multi_modal_projector") || name.starts_with("lm_head") {
            let moved = var.as_tensor().affine(1.1, 0.01).unwrap();
            var.set(&moved).unwrap();
        }
    }
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("saved");
    llava.save(&folder).unwrap();
    mosaic_models::folder::copy_tokenizer_files(&fixtures.join("models").join(model), &folder)
        .unwrap();

    // A reference of our outputs in the fixture's format, for the checker to compare transformers with.
    let refdir = fixtures.join("reference");
    let mut tensors =
        candle_core::safetensors::load(refdir.join("llava.safetensors"), &Device::Cpu).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(refdir.join("llava.json")).unwrap()).unwrap();
    for case in ["a", "b"] {
        let get = |n: &str| tensors[&format!("{model}.{case}.{n}")].clone();
        let ids = get("input_ids").to_dtype(DType::U32).unwrap();
        let pixels = get("pixel_values");
        let logits =
            mosaic_models::no_grad(|| llava.logits(&ids, Some(&pixels), &[1], None).unwrap());
        let mut config = GenerationConfig::greedy(12);
        config.eos_token_ids = vec![0];
        config.pad_token_id = Some(0);
        let prompt: Vec<u32> = ids.squeeze(0).unwrap().to_vec1().unwrap();
        let generated = llava
            .generate(&[prompt], Some(&pixels), &[1], &config, None)
            .unwrap();
        json["models"][model]["cases"][case]["generate"]["new_token_ids"] =
            serde_json::json!(generated[0].token_ids);
        tensors.insert(format!("{model}.{case}.logits"), logits);
        if case == "a" {
            let features = mosaic_models::no_grad(|| llava.image_features(&pixels).unwrap());
            tensors.insert(format!("{model}.a.image_features"), features);
        }
    }
    let ours: HashMap<String, Tensor> = tensors;
    candle_core::safetensors::save(&ours, out.path().join("llava.safetensors")).unwrap();
    std::fs::write(out.path().join("llava.json"), json.to_string()).unwrap();

    let root = fixtures.join("..");
    let output = Command::new(python())
        .arg(root.join("xtask/scripts/check_llava_folder.py"))
        .arg("--folder")
        .arg(&folder)
        .args(["--model", model, "--reference"])
        .arg(out.path().join("llava.safetensors"))
        .current_dir(&root)
        .output()
        .expect("run the reference python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "transformers disagrees: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
