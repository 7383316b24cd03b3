//! Writing results: to stdout, or to a file through a temporary file and a rename.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

/// Writes `content` to `path` atomically, or to stdout when `path` is `None`.
pub fn write_output(path: Option<&Path>, content: &str) -> Result<()> {
    match path {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(content.as_bytes())?;
            out.flush()?;
        }
        Some(path) => mosaic_models::folder::write_atomic(path, content.as_bytes())?,
    }
    Ok(())
}
