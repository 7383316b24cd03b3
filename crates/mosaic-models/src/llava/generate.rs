//! Generation with images: the prompt's first pass puts the image features at the `<image>` positions (as
//! transformers' `generate` does through `pixel_values`), every later step is the language model's own.

use candle_core::{Device, Tensor};

use super::model::Llava;
use crate::error::{ModelError, Result};
use crate::generation::{CausalLm, Decoder, Generation, GenerationConfig, KvCache, generate};

/// The LLaVA as a [`CausalLm`] for one batch of prompts and their images.
struct PromptWithImages<'a> {
    llava: &'a Llava,
    features: Option<Tensor>,
    images_per_row: Vec<usize>,
}

impl CausalLm for PromptWithImages<'_> {
    fn vocab_size(&self) -> usize {
        self.llava.language_model.vocab_size()
    }

    fn max_positions(&self) -> usize {
        self.llava.language_model.max_positions()
    }

    fn device(&self) -> Device {
        self.llava.device()
    }

    fn new_cache(&self) -> KvCache {
        self.llava.language_model.new_cache()
    }

    fn next_token_logits(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> candle_core::Result<Tensor> {
        if cache.seq_len() > 0 {
            return self.llava.language_model.next_token_logits(
                input_ids,
                position_ids,
                attention_mask,
                cache,
            );
        }
        let embeds = self
            .llava
            .inputs_embeds(input_ids, self.features.as_ref(), &self.images_per_row)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let lm = &self.llava.language_model;
        let hidden = lm.transformer.forward_embeds(
            &embeds,
            Some(position_ids),
            Some(attention_mask),
            Some(cache),
        )?;
        let t = hidden.dim(1)?;
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
        Ok(lm.lm_logits(&last)?.detach())
    }
}

impl Llava {
    /// Continues each prompt (token ids, `<image>` already expanded to one token per feature) with up to
    /// `config.max_new_tokens` tokens; `pixel_values` `(N, C, S, S)` holds the images of all prompts in order,
    /// `images_per_row` how many each prompt has. A prompt that does not fit the context together with the new
    /// tokens is an error (cutting it would cut its image).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        pixel_values: Option<&Tensor>,
        images_per_row: &[usize],
        config: &GenerationConfig,
        decode: Option<Decoder<'_>>,
    ) -> Result<Vec<Generation>> {
        let context = self.language_model.max_positions();
        for (i, prompt) in prompts.iter().enumerate() {
            if prompt.len() + config.max_new_tokens > context {
                return Err(ModelError::InvalidInput(format!(
                    "prompt {i}: {} tokens (image features included) plus {} new ones exceed the language model's context of {context}",
                    prompt.len(),
                    config.max_new_tokens
                )));
            }
        }
        let _no_grad = crate::NoGradGuard::new();
        let features = pixel_values.map(|p| self.image_features(p)).transpose()?;
        let model = PromptWithImages {
            llava: self,
            features,
            images_per_row: images_per_row.to_vec(),
        };
        generate(&model, prompts, config, decode)
    }
}
