//! Batch compression codecs, chosen per producer.

use bytes::Bytes;
use spool_log::batch::BatchBuilder;

/// How a producer compresses its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    #[default]
    None,
}

impl Compression {
    /// Finishes a batch, compressing its records with this codec.
    pub(crate) fn finish(self, builder: BatchBuilder) -> Bytes {
        match self {
            Compression::None => builder.finish(),
        }
    }
}
