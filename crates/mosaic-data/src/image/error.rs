//! The error type of the image pipeline: every variant about a file names it.

use std::path::PathBuf;

use crate::error::DataError;

/// Everything that can go wrong while reading, decoding and transforming images and image data sets.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read.
    // The cause is in the message and deliberately not a `source()`, so error chains print it once.
    #[error("{}: cannot read: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// An image file holds no bytes at all.
    #[error("{}: empty file (0 bytes), not an image", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// An image file could not be decoded (truncated, corrupt, or not PNG/JPEG).
    #[error("{}: cannot decode image: {message}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// An image has no pixels.
    #[error("{}: zero-size image ({width}x{height})", path.display())]
    ZeroSize {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// An image declares more pixels than [`MAX_IMAGE_PIXELS`](super::decode::MAX_IMAGE_PIXELS) (a decompression bomb
    /// or a corrupt header); refused before decoding.
    #[error(
        "{}: image declares {width}x{height} = {} pixels, over the limit of {limit} (refused before decoding)",
        path.display(),
        *width as u64 * *height as u64
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The declared width.
        width: u32,
        /// The declared height.
        height: u32,
        /// The limit in pixels.
        limit: u64,
    },
    /// `preprocessor_config.json` (or an equivalent) is unusable.
    #[error("{}: malformed preprocessor config: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A data set names an image outside its data root (for instance `../../etc/passwd`).
    #[error(
        "{}:{line}: image path `{image}` is outside the data root {} (refused)",
        path.display(),
        root.display()
    )]
    OutsideRoot {
        /// The data file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The image path as written.
        image: String,
        /// The data root.
        root: PathBuf,
    },
    /// A class folder of an image-folder data set holds no image.
    #[error("{}: label folder holds no images (.png, .jpg, .jpeg)", path.display())]
    EmptyClass {
        /// The folder.
        path: PathBuf,
    },
    /// An image-folder root has no class folder.
    #[error("{}: no label folders (expected <root>/<label>/*.png|jpg)", path.display())]
    NoClasses {
        /// The root folder.
        path: PathBuf,
    },
    /// A record-level problem of a JSONL/CSV data file (missing field, bad JSON, ...).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A transform or augmentation setting is out of range, or an image is too small for it.
    #[error("image transform: {0}")]
    Transform(String),
    /// A batch stopped at a bad image, or more images were skipped than allowed.
    #[error("{message}")]
    Batch {
        /// What happened, naming the files.
        message: String,
    },
}

/// Shorthand for results of the image pipeline.
pub type ImageResult<T> = std::result::Result<T, ImageError>;
