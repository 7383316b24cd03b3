//! The other direction: a DETR mosaic saves (with weights and frozen batch-norm buffers changed from the
//! fixture's, so the check cannot pass on the fixture's own values) loads in transformers'
//! `DetrForObjectDetection` with no missing or unexpected key and gives mosaic's logits, boxes and auxiliary
//! outputs (within 1e-4). Needs the reference venv (`../shared/tools/setup-reference-env.sh`), so it is ignored by
//! default; `.ci/run` runs it when the venv exists. `MOSAIC_REFERENCE_PYTHON` names its python (default
//! `~/.cache/mosaic-refenv/bin/python`).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use mosaic_models::detr::{BackboneNorms, DetrConfig};
use mosaic_models::{Detr, no_grad};

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
fn transformers_loads_a_detr_mosaic_saved_with_mosaic_outputs() {
    let fixtures = common::fixtures();
    let model = "tiny-detr";
    let detr =
        Detr::from_folder(&fixtures.join("models").join(model), None, 0, &Device::Cpu).unwrap();
    // Weights of our own: the heads and the decoder moved, as training moves them; one frozen batch norm's
    // statistics changed too, so the buffers' saving is checked.
    for (name, var) in detr.params.all() {
        if name.starts_with("class_labels_classifier") || name.contains("decoder.layers.1") {
            var.set(&var.as_tensor().affine(1.1, 0.01).unwrap())
                .unwrap();
        }
    }
    let buffer = "model.backbone.conv_encoder.model.encoder.stages.1.layers.0.layer.0.normalization.running_var";
    let var = detr.buffers.get(buffer).unwrap();
    detr.buffers
        .set(buffer, &var.affine(2.0, 0.1).unwrap())
        .unwrap();
    check_with_transformers(&detr, model);
}

/// A DETR trained from scratch (trainable backbone norms, their running statistics moved by a training forward)
/// saves a folder transformers loads as its frozen norms, with the same outputs as ours in eval mode.
#[test]
#[ignore = "needs the reference Python (transformers)"]
fn transformers_loads_a_from_scratch_detr_with_trained_norms() {
    let fixtures = common::fixtures();
    let model = "tiny-detr";
    let config =
        DetrConfig::read(&fixtures.join("models").join(model).join("config.json")).unwrap();
    let detr = Detr::new_with(config, BackboneNorms::Trainable, 5, &Device::Cpu).unwrap();
    let refs =
        candle_core::safetensors::load(fixtures.join("reference/detr.safetensors"), &Device::Cpu)
            .unwrap();
    let pixels = &refs[&format!("{model}.pixel_values")];
    detr.set_training(true);
    no_grad(|| detr.forward(pixels, None)).unwrap();
    detr.set_training(false);
    check_with_transformers(&detr, model);
}

/// Saves `detr`, records its outputs on the fixture inputs of `model`, and has transformers load the folder
/// (no missing or unexpected key) and compare.
fn check_with_transformers(detr: &Detr, model: &str) {
    let fixtures = common::fixtures();
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("saved");
    detr.save(&folder).unwrap();

    // A reference of our outputs in the fixture's format, for the checker to compare transformers with.
    let refs =
        candle_core::safetensors::load(fixtures.join("reference/detr.safetensors"), &Device::Cpu)
            .unwrap();
    let pixels = refs[&format!("{model}.pixel_values")].clone();
    let mask = refs[&format!("{model}.pixel_mask")].clone();
    let result =
        no_grad(|| detr.forward(&pixels, Some(&mask.to_dtype(DType::F32).unwrap()))).unwrap();
    let mut ours: HashMap<String, Tensor> = HashMap::new();
    ours.insert(format!("{model}.pixel_values"), pixels);
    ours.insert(format!("{model}.pixel_mask"), mask);
    ours.insert(format!("{model}.logits"), result.logits);
    ours.insert(format!("{model}.pred_boxes"), result.pred_boxes);
    for (i, aux) in result.auxiliary.into_iter().enumerate() {
        ours.insert(format!("{model}.aux.{i}.logits"), aux.logits);
        ours.insert(format!("{model}.aux.{i}.pred_boxes"), aux.pred_boxes);
    }
    let reference = out.path().join("detr.safetensors");
    candle_core::safetensors::save(&ours, &reference).unwrap();

    let root = fixtures.join("..");
    let output = Command::new(python())
        .arg(root.join("xtask/scripts/check_detr_folder.py"))
        .arg("--folder")
        .arg(&folder)
        .args(["--model", model, "--reference"])
        .arg(&reference)
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
