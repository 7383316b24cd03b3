//! `mosaic`: adapt pretrained transformers from the command line (see SPEC.md's CLI contracts).

mod commands;
mod encode;
mod output;
mod progress;

use clap::{Parser, Subcommand};

// Training allocates and frees the same large activation buffers every step; mimalloc keeps them mapped, where
// the system allocator returns them to the kernel and pays a page fault per page on the next step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mosaic",
    version,
    about = "Adapt pretrained transformers: prompts, fine-tuning, PEFT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a training recipe (no recipe: the embedded default sentiment recipe on all-MiniLM-L6-v2).
    Train(commands::train::TrainArgs),
    /// Evaluate a checkpoint on labelled data.
    Eval(commands::eval::EvalArgs),
    /// Label new data with a checkpoint.
    Predict(commands::predict::PredictArgs),
    /// Sentence embeddings as JSONL rows {"text", "embedding"}.
    Embed(commands::embed::EmbedArgs),
    /// Predict the [MASK] token with a masked-LM head.
    FillMask(commands::fill_mask::FillMaskArgs),
    /// Continue a prompt with a causal language model (GPT-2).
    Generate(commands::generate::GenerateArgs),
    /// Describe an image with a LLaVA model.
    Caption(commands::visual::CaptionArgs),
    /// Answer a question about an image with a LLaVA model.
    Vqa(commands::visual::VqaArgs),
    /// Fold a LoRA adapter into its base model and write a whole HF model folder.
    Merge(commands::merge::MergeArgs),
    /// Classify an image among free-form labels with CLIP (prompt ensembles with repeated --template).
    ZeroShot(commands::zero_shot::ZeroShotArgs),
    /// Draw an image from text with a text-to-image checkpoint (a small decoder, not a diffusion model).
    Imagine(commands::imagine::ImagineArgs),
    /// Find objects in images with a DETR (boxes in pixels; --output writes a COCO results file).
    Detect(commands::detect::DetectArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_max_level(tracing::Level::INFO)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => commands::train::run(args),
        // Inference commands record no backward graph.
        Command::Eval(args) => mosaic_models::no_grad(|| commands::eval::run(args)),
        Command::Predict(args) => mosaic_models::no_grad(|| commands::predict::run(args)),
        Command::Embed(args) => mosaic_models::no_grad(|| commands::embed::run(args)),
        Command::FillMask(args) => mosaic_models::no_grad(|| commands::fill_mask::run(args)),
        Command::Generate(args) => mosaic_models::no_grad(|| commands::generate::run(args)),
        Command::Caption(args) => mosaic_models::no_grad(|| commands::visual::caption(args)),
        Command::Vqa(args) => mosaic_models::no_grad(|| commands::visual::vqa(args)),
        Command::Merge(args) => mosaic_models::no_grad(|| commands::merge::run(args)),
        Command::ZeroShot(args) => mosaic_models::no_grad(|| commands::zero_shot::run(args)),
        Command::Imagine(args) => mosaic_models::no_grad(|| commands::imagine::run(args)),
        Command::Detect(args) => mosaic_models::no_grad(|| commands::detect::run(args)),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
