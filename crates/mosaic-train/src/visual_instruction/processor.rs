//! LLaVA's processor, as transformers' `LlavaProcessor` does it: images through the folder's
//! `preprocessor_config.json` (CLIPImageProcessor), each `<image>` of a prompt expanded to one placeholder token
//! per image feature, and the chat template from `chat_template.jinja`, `processor_config.json` or
//! `tokenizer_config.json` (LLaVA-1.5's when the folder has none).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mosaic_data::image::{ImageProcessor, ImageProcessorConfig, decode_file};
use mosaic_data::{Encoder, Encoding};
use mosaic_models::Llava;
use mosaic_prompt::{ChatMessage, ChatTemplate, TemplateValue};

use crate::error::{Result, TrainError};

/// The placeholder a prompt marks an image with.
pub const IMAGE_TOKEN: &str = "<image>";

/// LLaVA-1.5's chat template (as transformers ships it for `llava-hf/llava-1.5-7b-hf`), with the assistant's
/// turn closed by EOS so that a model learns to stop: written into folders built from parts.
pub const LLAVA_CHAT_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] != 'system' %}\
{{ message['role'].upper() + ': '}}{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', \
'image') %}{{ '<image>\n' }}{% endfor %}{% if message['role'] != 'assistant' %}{% for content in message['content'] \
| selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in \
message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + eos_token }}\
{% endgeneration %}{{ ' ' }}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}\
{% endif %}";

/// ChatML with LLaVA's image items: for a language model whose tokenizer has `<|im_start|>` / `<|im_end|>` (one
/// token each, where LLaVA-1.5's `USER:` / `ASSISTANT:` cost a small BPE a dozen), written into folders built from
/// parts; the reply ends with `<|im_end|>`, which generation stops at.
pub const CHATML_LLAVA_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}\
{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}\
{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% if message['role'] == \
'assistant' %}{% generation %}{{ content['text'] + '<|im_end|>' }}{% endgeneration %}{% else %}\
{{ content['text'] + '<|im_end|>' }}{% endif %}{% endfor %}{{ '\n' }}{% endfor %}{% if add_generation_prompt %}\
{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The tokenizer, image processor and chat template of a LLaVA folder.
pub struct LlavaProcessor {
    pub encoder: Encoder,
    pub image: ImageProcessor,
    pub template: ChatTemplate,
    /// Whether the template reads `content` as a list of `{"type": "image"}` / `{"type": "text"}` items.
    content_parts: bool,
    pub image_token_id: u32,
    /// Placeholder tokens per image.
    pub image_tokens: usize,
    pub eos_id: u32,
    /// What ends a generated reply: EOS, and the template's end of turn (`<|im_end|>`) when it has one.
    pub stop_ids: Vec<u32>,
}

fn invalid(message: String) -> TrainError {
    TrainError::Invalid(message)
}

/// The chat template of `dir`, where transformers looks for it; LLaVA-1.5's when there is none.
fn chat_template(dir: &Path) -> Result<ChatTemplate> {
    let chat = |e: mosaic_prompt::ChatError| invalid(format!("{}: {e}", dir.display()));
    if dir.join("chat_template.jinja").is_file() {
        return ChatTemplate::from_model_dir(dir).map_err(chat);
    }
    let processor_config = dir.join("processor_config.json");
    if processor_config.is_file() {
        let text = std::fs::read_to_string(&processor_config)
            .map_err(|e| TrainError::file(&processor_config, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TrainError::file(&processor_config, e))?;
        if let Some(source) = json.get("chat_template").and_then(|t| t.as_str()) {
            return ChatTemplate::with_origin(source, processor_config.display().to_string())
                .and_then(|t| t.with_special_tokens_from_dir(dir))
                .map_err(chat);
        }
    }
    match ChatTemplate::from_model_dir(dir) {
        Ok(template) => Ok(template),
        Err(_) => ChatTemplate::with_origin(LLAVA_CHAT_TEMPLATE, "LLaVA-1.5's chat template")
            .and_then(|t| t.with_special_tokens_from_dir(dir))
            .map_err(chat),
    }
}

/// The image processor of `dir`: `preprocessor_config.json`, else the `image_processor` that transformers 5
/// saves inside `processor_config.json`.
fn image_processor(dir: &Path) -> Result<ImageProcessor> {
    let bad = |e: mosaic_data::image::ImageError| invalid(e.to_string());
    let preprocessor = dir.join("preprocessor_config.json");
    let processor = dir.join("processor_config.json");
    if preprocessor.is_file() || !processor.is_file() {
        return ImageProcessor::from_folder(dir).map_err(bad);
    }
    let text = std::fs::read_to_string(&processor).map_err(|e| TrainError::file(&processor, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TrainError::file(&processor, e))?;
    let section = json.get("image_processor").ok_or_else(|| {
        invalid(format!(
            "{}: no image processor (neither preprocessor_config.json nor an `image_processor` here)",
            processor.display()
        ))
    })?;
    let config = ImageProcessorConfig::parse(&section.to_string(), &processor).map_err(bad)?;
    Ok(ImageProcessor::new(config))
}

/// `(patch_size, strategy, additional tokens)` of `processor_config.json`, when it says.
fn image_tokens_from_processor(dir: &Path, crop: (usize, usize)) -> Result<Option<usize>> {
    let path = dir.join("processor_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TrainError::file(&path, e))?;
    let Some(patch) = json.get("patch_size").and_then(|p| p.as_u64()) else {
        return Ok(None);
    };
    let patch = patch.max(1) as usize;
    let extra = json
        .get("num_additional_image_tokens")
        .and_then(|n| n.as_u64())
        .unwrap_or(0) as usize;
    let default = json
        .get("vision_feature_select_strategy")
        .and_then(|s| s.as_str())
        .is_some_and(|s| s == "default");
    let n = (crop.0 / patch) * (crop.1 / patch) + extra;
    Ok(Some(n.saturating_sub(usize::from(default))))
}

impl LlavaProcessor {
    /// The processor of the LLaVA folder `dir` for `model`.
    pub fn from_folder(dir: &Path, model: &Llava) -> Result<Self> {
        let encoder = Encoder::from_file(dir.join("tokenizer.json"))?;
        let image = image_processor(dir)?;
        let template = chat_template(dir)?;
        let content_parts =
            template.source().contains("'image'") || template.source().contains("\"image\"");
        let image_token_id = encoder
            .tokenizer()
            .token_to_id(IMAGE_TOKEN)
            .ok_or_else(|| {
                invalid(format!(
                    "{}: the tokenizer has no `{IMAGE_TOKEN}` token",
                    dir.join("tokenizer.json").display()
                ))
            })?;
        if image_token_id != model.config.image_token_index {
            return Err(invalid(format!(
                "{}: the tokenizer's `{IMAGE_TOKEN}` is token {image_token_id} but config.json's image_token_index is {}",
                dir.display(),
                model.config.image_token_index
            )));
        }
        let features = model.config.image_features();
        let size = model.config.vision.image_size;
        let image_tokens =
            image_tokens_from_processor(dir, image.config.output_size().unwrap_or((size, size)))?
                .unwrap_or(features);
        if image_tokens != features {
            return Err(invalid(format!(
                "{}: processor_config.json expands an image to {image_tokens} tokens but the model makes {features} features of it",
                dir.display()
            )));
        }
        let eos_id = model
            .language_model
            .config
            .eos_token_ids
            .first()
            .copied()
            .or_else(|| encoder.tokenizer().token_to_id("<|endoftext|>"))
            .ok_or_else(|| invalid(format!("{}: the model has no eos_token_id", dir.display())))?;
        let mut stop_ids = vec![eos_id];
        if template.source().contains("<|im_end|>")
            && let Some(end) = encoder.tokenizer().token_to_id("<|im_end|>")
        {
            stop_ids.push(end);
        }
        Ok(LlavaProcessor {
            stop_ids,
            encoder,
            image,
            template,
            content_parts,
            image_token_id,
            image_tokens,
            eos_id,
        })
    }

    /// `ids` with each `<image>` token repeated once per image feature.
    pub fn expand(&self, ids: &[u32]) -> Vec<u32> {
        let mut out = Vec::with_capacity(ids.len() + self.image_tokens);
        for &id in ids {
            if id == self.image_token_id {
                out.extend(std::iter::repeat_n(id, self.image_tokens));
            } else {
                out.push(id);
            }
        }
        out
    }

    /// How many `<image>` placeholders `ids` (not expanded) holds.
    pub fn count_images(&self, ids: &[u32]) -> usize {
        ids.iter().filter(|&&id| id == self.image_token_id).count()
    }

    /// Token ids and byte offsets of `text` (no special tokens added, as transformers' GPT-2 tokenizer adds
    /// none).
    pub fn tokenize(&self, text: &str) -> Result<Encoding> {
        self.encoder
            .tokenizer()
            .encode(text, false)
            .map_err(|e| invalid(format!("cannot tokenize: {e}")))
    }

    /// A prompt's token ids, its `<image>` expanded.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.expand(self.tokenize(text)?.get_ids()))
    }

    /// Pixel values `(N, C, S, S)` of image files; a missing or undecodable one is an error naming it.
    pub fn pixel_values(&self, paths: &[PathBuf], device: &Device) -> Result<Tensor> {
        let mut data = Vec::new();
        let mut shape = [0usize; 3];
        for path in paths {
            let px = decode_file(path)
                .and_then(|image| self.image.preprocess(&image))
                .map_err(|e| invalid(e.to_string()))?;
            shape = px.shape();
            data.extend_from_slice(&px.data);
        }
        Ok(Tensor::from_vec(
            data,
            (paths.len(), shape[0], shape[1], shape[2]),
            device,
        )?)
    }

    /// The message as the template wants it: content parts (images first, as LLaVA's templates render them)
    /// for templates that read them, else the text with its `<image>` markers.
    pub fn message(&self, message: &ChatMessage) -> ChatMessage {
        if !self.content_parts {
            return message.clone();
        }
        let images = message.content.matches(IMAGE_TOKEN).count();
        let text = message.content.replace(IMAGE_TOKEN, "");
        let mut parts = vec![serde_json::json!({ "type": "image" }); images];
        let text = text.trim();
        if !text.is_empty() || images == 0 {
            parts.push(serde_json::json!({ "type": "text", "text": text }));
        }
        // A JSON value always converts into a template value.
        let parts =
            <TemplateValue as serde::Deserialize>::deserialize(serde_json::Value::Array(parts))
                .unwrap_or_default();
        message.clone().with_field("content", parts)
    }

    /// A user turn with one image and `question`, rendered with the generation prompt (what `caption` and
    /// `vqa` send the model).
    pub fn question_prompt(&self, question: &str) -> Result<String> {
        let user = ChatMessage::user(format!("{IMAGE_TOKEN}\n{question}"));
        self.template
            .render(&[self.message(&user)], true)
            .map_err(|e| invalid(e.to_string()))
    }
}
