//! LLaVA's processor against transformers' `LlavaProcessor` (the fixtures of make_llava_fixtures.py), the
//! visual-instruction data (labels on the replies only, image positions −100, bad rows named), and both training
//! stages end to end on a LLaVA built from parts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use mosaic_data::IGNORE_INDEX;
use mosaic_models::Llava;
use mosaic_models::testing::assert_close;
use mosaic_train::visual_instruction::{LlavaProcessor, VisualEncoder};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> (serde_json::Value, HashMap<String, Tensor>) {
    let dir = root().join("fixtures/reference");
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llava.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("llava.safetensors"), &Device::Cpu).unwrap();
    (json, tensors)
}

fn processor(model: &str) -> (Llava, LlavaProcessor) {
    let dir = root().join("fixtures/models").join(model);
    let llava = Llava::from_folder(&dir, 0, &Device::Cpu).unwrap();
    let processor = LlavaProcessor::from_folder(&dir, &llava).unwrap();
    (llava, processor)
}

fn ids_of(t: &Tensor) -> Vec<u32> {
    t.squeeze(0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn the_processor_matches_transformers_llava_processor() {
    let (json, tensors) = reference();
    for model in ["tiny-llava", "tiny-llava-layers"] {
        let (_, p) = processor(model);
        let cases = &json["models"][model]["cases"];
        assert_eq!(
            p.image_tokens,
            cases["a"]["num_image_tokens"][0].as_u64().unwrap() as usize
        );
        // a: a raw prompt; b: the chat template around an image and a question.
        let raw = cases["a"]["prompts"][0].as_str().unwrap();
        assert_eq!(
            p.encode_prompt(raw).unwrap(),
            ids_of(&tensors[&format!("{model}.a.input_ids")])
        );
        let rendered = p.question_prompt("What colour is it?").unwrap();
        assert_eq!(rendered, cases["b"]["rendered_prompt"].as_str().unwrap());
        assert_eq!(
            p.encode_prompt(&rendered).unwrap(),
            ids_of(&tensors[&format!("{model}.b.input_ids")])
        );
        for case in ["a", "b"] {
            let name = cases[case]["images"][0].as_str().unwrap();
            let ours = p.pixel_values(&[root().join(name)], &Device::Cpu).unwrap();
            // JPEG decoders differ by a few levels (ours is zune-jpeg, PIL's libjpeg-turbo; the transforms
            // themselves are checked exactly in mosaic-data's image_preprocess tests).
            let tol = if name.ends_with(".png") { 1e-6 } else { 0.08 };
            assert_close(
                &ours,
                &tensors[&format!("{model}.{case}.pixel_values")],
                tol,
            );
        }
    }
}

fn write_rows(dir: &Path, rows: &[serde_json::Value]) -> PathBuf {
    std::fs::copy(
        root().join("fixtures/images/photo.jpg"),
        dir.join("photo.jpg"),
    )
    .unwrap();
    let path = dir.join("data.json");
    std::fs::write(&path, serde_json::to_string(rows).unwrap()).unwrap();
    path
}

fn conversation(question: &str, answer: Option<&str>) -> serde_json::Value {
    let mut turns = vec![serde_json::json!({"from": "human", "value": question})];
    if let Some(a) = answer {
        turns.push(serde_json::json!({"from": "gpt", "value": a}));
    }
    serde_json::json!({"id": "row-1", "image": "photo.jpg", "conversations": turns})
}

#[test]
fn labels_cover_the_reply_and_eos_only() {
    let (llava, p) = processor("tiny-llava");
    let dir = tempfile::tempdir().unwrap();
    let path = write_rows(
        dir.path(),
        &[conversation("<image>\nWhat is it?", Some("a dog"))],
    );
    let encoder = VisualEncoder {
        processor: &p,
        image_field: "image",
        max_length: 128,
    };
    let data = encoder.load(&path, &Device::Cpu).unwrap();
    let e = &data.examples[0];
    assert_eq!(e.id, "row-1");
    let images = e
        .input_ids
        .iter()
        .filter(|&&id| id == p.image_token_id)
        .count();
    assert_eq!(images, llava.config.image_features());
    let counted: Vec<u32> = e
        .labels
        .iter()
        .filter(|&&l| l != IGNORE_INDEX)
        .map(|&l| l as u32)
        .collect();
    let reply = p.encoder.tokenizer().decode(&counted, false).unwrap();
    assert!(
        reply.contains("a dog") && !reply.contains("What"),
        "{reply:?}"
    );
    assert_eq!(*e.labels.last().unwrap(), p.eos_id as i64);
    for (id, label) in e.input_ids.iter().zip(&e.labels) {
        if *id == p.image_token_id {
            assert_eq!(*label, IGNORE_INDEX);
        }
    }
    // The prompt asked at evaluation ends with the generation prompt.
    let prompt = p.encoder.tokenizer().decode(&e.prompt_ids, false).unwrap();
    assert!(prompt.ends_with("ASSISTANT:"), "{prompt:?}");
    assert_eq!(data.pixel_values.dims(), &[1, 3, 32, 32]);
}

#[test]
fn bad_rows_are_errors_naming_the_row() {
    let (_, p) = processor("tiny-llava");
    let dir = tempfile::tempdir().unwrap();
    let encoder = VisualEncoder {
        processor: &p,
        image_field: "image",
        max_length: 128,
    };
    let cases = [
        (
            conversation("<image>\nWhat is it?", None),
            "no assistant turn",
        ),
        (
            conversation("<image>\n<image>\nWhat is it?", Some("two")),
            "2 `<image>` markers",
        ),
        (
            serde_json::json!({"image": "missing.png", "conversations": []}),
            "does not exist",
        ),
        (
            conversation(&format!("<image>\n{}", "word ".repeat(120)), Some("x")),
            "more than the 128",
        ),
    ];
    for (row, wanted) in cases {
        let path = write_rows(dir.path(), &[row]);
        let err = match encoder.load(&path, &Device::Cpu) {
            Ok(_) => panic!("accepted a bad row ({wanted})"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("row 1") && err.contains(wanted), "{err}");
    }
    // An undecodable image names its file.
    std::fs::write(dir.path().join("photo.jpg"), b"not an image").unwrap();
    let path = dir.path().join("data.json");
    std::fs::write(
        &path,
        serde_json::to_string(&[conversation("<image>\nQ", Some("A"))]).unwrap(),
    )
    .unwrap();
    let err = encoder.load(&path, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("photo.jpg"), "{err}");
}

/// `n` short scene questions (answers `yes`/`no`/counts) with absolute image paths, as a LLaVA JSON array.
fn scene_rows(dir: &Path, n: usize) -> PathBuf {
    let scenes = root().join("fixtures/data/scenes");
    let text = std::fs::read_to_string(scenes.join("vqa-train.json")).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let picked: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|r| matches!(r["question_type"].as_str(), Some("count" | "yes/no")))
        .take(n)
        .map(|mut r| {
            let image = scenes.join(r["image"].as_str().unwrap());
            r["image"] = image.display().to_string().into();
            r
        })
        .collect();
    let path = dir.join("scenes.json");
    std::fs::write(&path, serde_json::to_string(&picked).unwrap()).unwrap();
    path
}

fn recipe(text: &str, out: &Path) -> mosaic_train::recipe::Recipe {
    let text = format!("output = \"{}\"\n{text}", out.display());
    let mut r = mosaic_train::recipe::Recipe::from_toml_str(&text, "llava-test.toml").unwrap();
    r.output = out.to_path_buf();
    r
}

fn weights(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn both_stages_run_end_to_end_from_parts_with_lora_in_stage_two() {
    let dir = tempfile::tempdir().unwrap();
    let data = scene_rows(dir.path(), 12);
    let models = root().join("fixtures/models");
    let head = format!(
        "task = \"visual-instruction\"\n[data]\ntrain = \"{0}\"\nvalid = \"{0}\"\ntest = \"{0}\"\n\
         [train]\nepochs = 2\nbatch_size = 4\nlr = 5e-3\nseed = 3\n",
        data.display()
    );
    // Stage 1: only the projector trains; the towers are the CLIP's and the GPT-2's, untouched.
    let align_out = dir.path().join("align");
    let align = recipe(
        &format!(
            "model = \"{}\"\nvision_model = \"{}\"\nstage = \"align\"\n{head}",
            models.join("tiny-gpt2").display(),
            models.join("tiny-clip").display()
        ),
        &align_out,
    );
    mosaic_train::pipeline::run(&align, &mut mosaic_train::observer::Silent).unwrap();
    let r = report(&align_out);
    assert_eq!(r["stage"], "align");
    let base = weights(&align_out.join("base/model.safetensors"));
    let best = weights(&align_out.join("best/model.safetensors"));
    let projector: usize = base
        .iter()
        .filter(|(k, _)| k.starts_with("multi_modal_projector."))
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(
        r["trainable_parameters"].as_u64().unwrap() as usize,
        projector
    );
    for (name, tensor) in &base {
        let moved = mosaic_models::testing::max_abs_diff(&best[name], tensor) > 0.0;
        assert_eq!(moved, name.starts_with("multi_modal_projector."), "{name}");
    }
    assert!(r["valid_loss"]["after"]["loss"].as_f64() < r["valid_loss"]["before"]["loss"].as_f64());
    assert!(r["answers"]["after"]["vqa"]["overall"].is_number(), "{r}");

    // Stage 2 with LoRA on the language model: best/ holds the adapter (and the projector whole).
    let instruct_out = dir.path().join("instruct");
    let instruct = recipe(
        &format!(
            "model = \"{}\"\nstage = \"instruct\"\n{head}\n[peft]\nmethod = \"lora\"\nr = 4\n",
            align_out.join("best").display()
        ),
        &instruct_out,
    );
    mosaic_train::pipeline::run(&instruct, &mut mosaic_train::observer::Silent).unwrap();
    let r = report(&instruct_out);
    assert_eq!(r["peft"], "lora");
    let best = instruct_out.join("best");
    assert!(best.join("adapter_config.json").is_file());
    let adapter = weights(&best.join("adapter_model.safetensors"));
    assert!(
        adapter
            .keys()
            .any(|k| k.contains("language_model") && k.contains("lora_A"))
    );
    assert!(
        adapter.keys().any(|k| k.contains("multi_modal_projector")),
        "{:?}",
        adapter.keys()
    );
    // The checkpoint loads on its base for inference, and its processor comes from the base.
    let llava = mosaic_train::visual_instruction::load_model(&best, 0, &Device::Cpu).unwrap();
    let p = mosaic_train::visual_instruction::processor_for(&best, &llava).unwrap();
    assert_eq!(p.image_tokens, 16);
}

#[test]
fn recipe_keys_of_visual_instruction_are_checked() {
    let base = "model = \"m\"\ntask = \"visual-instruction\"\n[data]\ntrain = \"t.json\"\n";
    let err = mosaic_train::recipe::Recipe::from_toml_str(
        &format!("projector = \"linear\"\n{base}"),
        "r.toml",
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("projector"));
    let err = mosaic_train::recipe::Recipe::from_toml_str(
        &format!("stage = \"align\"\nunfreeze_vision_tower = true\n{base}"),
        "r.toml",
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("unfreeze_vision_tower"));
    let err = mosaic_train::recipe::Recipe::from_toml_str(
        "model = \"m\"\nstage = \"align\"\n[data]\ntrain = \"t.jsonl\"\n",
        "r.toml",
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("stage"), "{err}");
}
