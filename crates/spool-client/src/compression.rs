//! How a producer compresses its batches; the codecs themselves live with the batch
//! format (`spool_log::batch::codec`), shared with the broker that validates them.

use bytes::Bytes;
use spool_log::batch::{self, BatchBuilder, codec};

/// How a producer compresses its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn codec(self) -> batch::Compression {
        match self {
            Compression::None => batch::Compression::None,
            Compression::Gzip => batch::Compression::Gzip,
            Compression::Snappy => batch::Compression::Snappy,
            Compression::Lz4 => batch::Compression::Lz4,
            Compression::Zstd => batch::Compression::Zstd,
        }
    }

    /// Finishes a batch, its records compressed with this codec. Should compression fail
    /// (it only can by running out of memory), the batch goes uncompressed.
    pub fn finish(self, builder: BatchBuilder) -> Bytes {
        if self == Compression::None {
            return builder.finish();
        }
        match codec::compress(self.codec(), builder.records()) {
            Ok(compressed) => builder.finish_compressed(self.codec(), &compressed),
            Err(error) => {
                tracing::warn!(%error, codec = ?self, "compression failed; sending the batch uncompressed");
                builder.finish()
            }
        }
    }
}
