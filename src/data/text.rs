//! Text corpora for the byte-level language model.
//!
//! The vocabulary is the 256 byte values, so any UTF-8 text (any language, code, markup) trains with no
//! tokenizer. The last tenth of a corpus is held out for validation; training windows are drawn from
//! the rest on the device (`ops::batch::text_windows`), validation windows are read in order.

use std::path::Path;

use crate::error::{Error, Result};

/// Bytes of tigel's own README, docs, shaders and sources, gathered at build time (see build.rs).
pub static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/corpus.txt"));

/// The byte vocabulary size.
pub const VOCAB: usize = 256;

/// Fraction of a corpus held out for validation (its end).
pub const HOLDOUT: f64 = 0.1;

/// A text corpus: its bytes and where they came from.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Where it came from: a path, or `<embedded>`.
    pub name: String,
    /// The text, as bytes (UTF-8).
    pub bytes: Vec<u8>,
}

impl Corpus {
    /// tigel's own sources and docs, compiled into the binary.
    pub fn embedded() -> Corpus {
        Corpus { name: "<embedded>".into(), bytes: EMBEDDED.to_vec() }
    }

    /// Reads a UTF-8 text file. Empty files and files that are not UTF-8 are refused by name.
    pub fn load(path: &Path) -> Result<Corpus> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        Corpus::from_bytes(path.display().to_string(), bytes)
    }

    /// A corpus of `bytes` (`name` says where they came from); empty or non-UTF-8 bytes are refused.
    pub fn from_bytes(name: String, bytes: Vec<u8>) -> Result<Corpus> {
        if bytes.is_empty() {
            return Err(Error::invalid("data", format!("{name} is empty: a text corpus needs at least one byte")));
        }
        if let Err(e) = std::str::from_utf8(&bytes) {
            return Err(Error::invalid(
                "data",
                format!("{name} is not UTF-8 text (invalid byte sequence at byte {})", e.valid_up_to()),
            ));
        }
        Ok(Corpus { name, bytes })
    }

    /// The embedded corpus for `None`, else the file.
    pub fn from_arg(path: Option<&Path>) -> Result<Corpus> {
        match path {
            Some(p) => Corpus::load(p),
            None => Ok(Corpus::embedded()),
        }
    }

    /// Bytes in the corpus.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the corpus has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Byte ranges (start, len) of the training part and the held-out last `HOLDOUT`.
    pub fn split(&self) -> ((usize, usize), (usize, usize)) {
        let held = ((self.len() as f64) * HOLDOUT).round() as usize;
        let train = self.len() - held;
        ((0, train), (train, held))
    }

    /// Checks both parts can hold a window of `context` tokens plus the next-byte target, with an error
    /// that names the sizes.
    pub fn check_context(&self, context: usize) -> Result<()> {
        let ((_, train), (_, held)) = self.split();
        // Saturating: a context near usize::MAX is refused by this message, not by an overflow.
        let need = context.saturating_add(1);
        if train < need.saturating_add(1) || held < need {
            return Err(Error::invalid(
                "data",
                format!(
                    "{} has {} bytes ({train} for training, {held} held out): too short for a context of {context} \
                     (each part needs at least {need} bytes); use a longer text or a smaller --context",
                    self.name,
                    self.len()
                ),
            ));
        }
        Ok(())
    }

    /// Consecutive non-overlapping windows of `context` inputs (and their next-byte targets) covering
    /// a byte range: every byte after the first is predicted once. The last window may be shorter;
    /// it is returned with its true length. A range past the corpus is cut at its end; a context of 0
    /// counts as 1.
    pub fn windows(&self, (start, len): (usize, usize), context: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let end = start.saturating_add(len).min(self.len());
        let context = context.max(1);
        let mut o = start;
        while o.saturating_add(1) < end {
            let n = context.min(end - 1 - o);
            out.push((o, n));
            o += n;
        }
        out
    }
}
