//! A small conditional image decoder `G(T)`: from a text embedding `T: (B, width)` to an RGB image
//! `(B, 3, H, W)` in `[0, 1]` — the "image generated from text" whose mean squared error against the real image
//! is the text → image objective (issue 15).
//!
//! `Linear → GELU → reshape (C, s, s) → [nearest upsample ×2 → conv 3×3 → GELU] × n → conv 3×3 → sigmoid`, with
//! `s · 2ⁿ = H = W`. It is a plain convolutional decoder trained by regression, NOT a diffusion model: it learns
//! the mean image of what a caption describes, so its pictures are blurry averages. Every op it uses records a
//! backward pass (candle's `conv2d`, `upsample_nearest2d` and `ops::sigmoid`, mosaic's exact GELU).
//!
//! Parameter names are this crate's own (there is no transformers counterpart): `input.weight (C·s·s, width)`,
//! `input.bias`, `blocks.{i}.weight (C_out, C_in, 3, 3)`, `blocks.{i}.bias`, `output.weight (3, C_last, 3, 3)`,
//! `output.bias`. The channels halve with each upsampling, down to at least 8.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mosaic_models::image_decoder::{DecoderConfig, TextToImageDecoder};
//! use mosaic_models::params::{ParamLoader, ParamStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = DecoderConfig::for_image(16, 32, 32)?; // 4×4 → 8 → 16 → 32
//! let loader = ParamLoader::fresh(ParamStore::new(), 0, &Device::Cpu);
//! let decoder = TextToImageDecoder::new(&config, &loader.pp("decoder"))?;
//! let image = decoder.forward(&Tensor::zeros((2, 16), candle_core::DType::F32, &Device::Cpu)?)?;
//! assert_eq!(image.dims(), [2, 3, 32, 32]);
//! # Ok(()) }
//! ```

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::grad_mode::param;
use crate::layers::{Activation, Linear};
use crate::params::{Init, ParamLoader};
use crate::resnet::conv2d;

/// The smallest channel count a convolution block is narrowed to.
const MIN_CHANNELS: usize = 8;

/// The decoder's shape, as `mosaic.json` stores it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecoderConfig {
    /// The width of the text embedding it reads.
    pub input_width: usize,
    /// The channels of the first feature map (halved with each upsampling, down to 8).
    pub base_channels: usize,
    /// The side of the first feature map.
    pub start_size: usize,
    /// The side of the generated image: `start_size · 2^upsamples`.
    pub image_size: usize,
    /// The image's channels (3, RGB).
    pub channels: usize,
}

impl DecoderConfig {
    /// The decoder of square `image_size` images: the start map is `image_size` halved while it stays an even
    /// number of at least 8 (32 → 4 with three upsamplings; 224 → 7 with five).
    pub fn for_image(input_width: usize, base_channels: usize, image_size: usize) -> Result<Self> {
        let mut start = image_size;
        while start.is_multiple_of(2) && start >= 8 {
            start /= 2;
        }
        let config = DecoderConfig {
            input_width,
            base_channels,
            start_size: start,
            image_size,
            channels: 3,
        };
        config.validate()?;
        Ok(config)
    }

    /// How many ×2 upsamplings take the start map to the image size.
    pub fn upsamples(&self) -> usize {
        let mut n = 0;
        let mut side = self.start_size;
        while side < self.image_size {
            side *= 2;
            n += 1;
        }
        n
    }

    /// The channels after upsampling block `i` (0-based).
    pub fn block_channels(&self, i: usize) -> usize {
        (self.base_channels >> (i + 1)).max(MIN_CHANNELS.min(self.base_channels))
    }

    /// Checks the widths are non-zero and `start_size · 2ⁿ = image_size` for some `n`.
    pub fn validate(&self) -> Result<()> {
        let fits = self.start_size > 0 && self.start_size << self.upsamples() == self.image_size;
        if self.input_width == 0 || self.base_channels == 0 || self.channels == 0 || !fits {
            return Err(ModelError::InvalidInput(format!(
                "image decoder: needs non-zero widths and an image size that is the start size times a power \
                 of two, got input width {}, {} base channels, start {}, image {}, {} channels",
                self.input_width,
                self.base_channels,
                self.start_size,
                self.image_size,
                self.channels
            )));
        }
        Ok(())
    }
}

/// A 3×3 convolution (stride 1, padding 1) with a bias.
#[derive(Debug, Clone)]
struct Conv3x3 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv3x3 {
    fn load(loader: &ParamLoader, in_channels: usize, out_channels: usize) -> Result<Self> {
        // Kaiming normal over the fan-in: GELU is near-linear for positive inputs, like ReLU.
        let std = (2.0 / (in_channels * 9) as f64).sqrt();
        Ok(Conv3x3 {
            weight: loader.get(
                "weight",
                &[out_channels, in_channels, 3, 3],
                Init::Normal(std),
            )?,
            bias: loader.get("bias", &[out_channels], Init::Zeros)?,
        })
    }

    /// `(B, in, H, W) -> (B, out, H, W)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv2d(x, &param(&self.weight), 1, 1)?;
        let bias = param(&self.bias).reshape((1, (), 1, 1))?;
        Ok(y.broadcast_add(&bias)?)
    }
}

/// `G(T)`: a text embedding to an image (see the module docs).
#[derive(Debug, Clone)]
pub struct TextToImageDecoder {
    pub config: DecoderConfig,
    input: Linear,
    blocks: Vec<Conv3x3>,
    output: Conv3x3,
}

impl TextToImageDecoder {
    /// The decoder of `config`, its parameters from `loader` (fresh ones drawn with the loader's seed).
    pub fn new(config: &DecoderConfig, loader: &ParamLoader) -> Result<Self> {
        config.validate()?;
        let (c, s) = (config.base_channels, config.start_size);
        let input = Linear::load(
            &loader.pp("input"),
            config.input_width,
            c * s * s,
            (1.0 / config.input_width as f64).sqrt(),
        )?;
        let mut blocks = Vec::new();
        let mut channels = c;
        for i in 0..config.upsamples() {
            let out = config.block_channels(i);
            blocks.push(Conv3x3::load(
                &loader.pp("blocks").pp(&i.to_string()),
                channels,
                out,
            )?);
            channels = out;
        }
        let output = Conv3x3::load(&loader.pp("output"), channels, config.channels)?;
        Ok(TextToImageDecoder {
            config: config.clone(),
            input,
            blocks,
            output,
        })
    }

    /// `text: (B, input_width) f32 -> image: (B, channels, image_size, image_size)` in `[0, 1]`.
    pub fn forward(&self, text: &Tensor) -> Result<Tensor> {
        let (b, width) = text.dims2().map_err(|_| {
            ModelError::InvalidInput(format!(
                "image decoder: expected a (batch, {}) text embedding, got shape {:?}",
                self.config.input_width,
                text.dims()
            ))
        })?;
        if width != self.config.input_width {
            return Err(ModelError::InvalidInput(format!(
                "image decoder: the text embedding is {width} wide but the decoder reads {}",
                self.config.input_width
            )));
        }
        let (c, s) = (self.config.base_channels, self.config.start_size);
        let x = Activation::Gelu.forward(&self.input.forward(text)?)?;
        let mut x = x.reshape((b, c, s, s))?;
        for block in &self.blocks {
            let (_, _, h, w) = x.dims4()?;
            let up = x.upsample_nearest2d(h * 2, w * 2)?;
            x = Activation::Gelu.forward(&block.forward(&up)?)?;
        }
        Ok(candle_nn::ops::sigmoid(&self.output.forward(&x)?)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::params::ParamStore;
    use crate::testing::assert_gradients_reach;

    fn input(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::arange(0f32, n as f32, &Device::Cpu)
            .unwrap()
            .affine(0.37, 0.1)
            .unwrap()
            .sin()
            .unwrap()
            .reshape(shape)
            .unwrap()
    }

    #[test]
    fn every_parameter_gets_a_finite_nonzero_gradient() {
        let store = ParamStore::new();
        let loader = ParamLoader::fresh(store.clone(), 3, &Device::Cpu);
        let config = DecoderConfig::for_image(6, 16, 16).unwrap();
        assert_eq!((config.start_size, config.upsamples()), (4, 2));
        let decoder = TextToImageDecoder::new(&config, &loader.pp("decoder")).unwrap();
        let image = decoder.forward(&input(&[2, 6])).unwrap();
        assert_eq!(image.dims(), [2, 3, 16, 16]);
        let target = input(&[2, 3, 16, 16]).affine(0.5, 0.5).unwrap();
        let loss = (image - target).unwrap().sqr().unwrap().mean_all().unwrap();
        let params = store.all();
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "decoder.input.weight",
                "decoder.input.bias",
                "decoder.blocks.0.weight",
                "decoder.blocks.0.bias",
                "decoder.blocks.1.weight",
                "decoder.blocks.1.bias",
                "decoder.output.weight",
                "decoder.output.bias",
            ]
        );
        assert_gradients_reach(
            params.iter().map(|(n, v)| (n.as_str(), v)),
            &loss.backward().unwrap(),
        );
    }

    #[test]
    fn output_lies_in_the_unit_interval() {
        let loader = ParamLoader::fresh(ParamStore::new(), 0, &Device::Cpu);
        let config = DecoderConfig::for_image(4, 8, 8).unwrap();
        let decoder = TextToImageDecoder::new(&config, &loader).unwrap();
        let image = decoder
            .forward(&input(&[3, 4]).affine(50.0, 0.0).unwrap())
            .unwrap();
        let v: Vec<f32> = image.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn sizes_and_bad_shapes() {
        let c = DecoderConfig::for_image(8, 64, 224).unwrap();
        assert_eq!((c.start_size, c.upsamples()), (7, 5));
        assert_eq!(
            (0..5).map(|i| c.block_channels(i)).collect::<Vec<_>>(),
            [32, 16, 8, 8, 8]
        );
        assert!(DecoderConfig::for_image(0, 8, 32).is_err());
        let loader = ParamLoader::fresh(ParamStore::new(), 0, &Device::Cpu);
        let decoder =
            TextToImageDecoder::new(&DecoderConfig::for_image(4, 8, 8).unwrap(), &loader).unwrap();
        let err = decoder.forward(&input(&[2, 5])).unwrap_err().to_string();
        assert!(err.contains("5 wide") && err.contains("reads 4"), "{err}");
    }
}
