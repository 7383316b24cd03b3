//! `mosaic imagine`: draws the image of a text prompt with a text-to-image checkpoint (a run's `best/` or
//! `last/`) and writes it as a PNG.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// What `mosaic imagine` reads.
#[derive(Args)]
#[command(
    long_about = "Draw an image from a text prompt with a text-to-image checkpoint (the best/ or last/ folder of \
a `task = \"text-to-image\"` run) and write it as a PNG.\n\nThis is a SMALL CONVOLUTIONAL DECODER trained with mean \
squared error on a LLaVA language model's text embedding, NOT a diffusion model: it draws the average of the \
training images a caption could describe, so its pictures are blurry averages, at the size of the training images \
(e.g. 32×32 pixels for the bundled scene set; --scale enlarges them)."
)]
pub struct ImagineArgs {
    /// A text-to-image checkpoint folder (a run's best/ or last/).
    #[arg(long)]
    model: PathBuf,
    /// The text to draw, e.g. "two red squares".
    #[arg(long)]
    prompt: String,
    /// The PNG to write (through a temporary file and a rename).
    #[arg(long)]
    output: PathBuf,
    /// Enlarge the image this many times (nearest neighbour).
    #[arg(long, default_value_t = 4)]
    scale: usize,
}

/// Runs `mosaic imagine`.
pub fn run(args: ImagineArgs) -> Result<()> {
    if args.scale == 0 || args.scale > 64 {
        bail!("--scale must be between 1 and 64, got {}", args.scale);
    }
    if !args.model.is_dir() {
        bail!("--model {}: no such folder", args.model.display());
    }
    let meta = args.model.join("mosaic.json");
    if !meta.is_file() && args.model.join("best/mosaic.json").is_file() {
        bail!(
            "--model {}: a run folder, not a checkpoint; give its best/ (or last/) folder",
            args.model.display()
        );
    }
    let image =
        mosaic_train::text_to_image::imagine(&args.model, &args.prompt, args.scale, &args.output)?;
    println!(
        "wrote {} ({}×{} pixels)",
        args.output.display(),
        image.width,
        image.height
    );
    Ok(())
}
