//! Kafka's batch codecs: gzip, snappy (in the xerial framing Kafka's Java client writes),
//! lz4 (the LZ4 frame format) and zstd. A batch is compressed as one block of records;
//! its header, record count and offsets stay readable without decompressing. Producers
//! compress, brokers decompress to validate what they store, consumers to read.

use std::io::{Read, Write};

use crate::batch::Compression as Codec;

/// The largest records section a batch may decompress to: a guard against a batch built
/// to expand without bound.
pub const MAX_DECOMPRESSED_BYTES: u64 = 256 * 1024 * 1024;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;

/// Compresses a records section.
pub fn compress(codec: Codec, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match codec {
        Codec::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::default(),
            );
            encoder.write_all(data)?;
            encoder.finish()
        }
        Codec::Snappy => {
            let mut out = Vec::with_capacity(data.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = encoder.compress_vec(chunk).map_err(std::io::Error::other)?;
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Codec::Lz4 => {
            let mut encoder =
                lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
            encoder.write_all(data)?;
            encoder.finish().map_err(std::io::Error::other)
        }
        Codec::Zstd => zstd::stream::encode_all(data, 3),
        _ => Ok(data.to_vec()),
    }
}

/// Decompresses a batch's records section.
pub fn decompress(codec: Codec, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let limit = MAX_DECOMPRESSED_BYTES;
    let mut out = Vec::with_capacity(data.len() * 3);
    match codec {
        Codec::Gzip => {
            flate2::read::GzDecoder::new(data)
                .take(limit + 1)
                .read_to_end(&mut out)?;
        }
        Codec::Snappy => out = decompress_snappy(data)?,
        Codec::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(data)
                .take(limit + 1)
                .read_to_end(&mut out)?;
        }
        Codec::Zstd => {
            zstd::stream::read::Decoder::new(data)?
                .take(limit + 1)
                .read_to_end(&mut out)?;
        }
        _ => out.extend_from_slice(data),
    }
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(
            "the batch decompresses to more than 256 MiB",
        ));
    }
    Ok(out)
}

/// Xerial-framed snappy (what Kafka's Java client writes), or a raw snappy block.
fn decompress_snappy(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut decoder = snap::raw::Decoder::new();
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    if !data.starts_with(&XERIAL_MAGIC) {
        let len = snap::raw::decompress_len(data).map_err(std::io::Error::other)?;
        if len as u64 > MAX_DECOMPRESSED_BYTES {
            return Err(invalid("the batch decompresses to more than 256 MiB"));
        }
        return decoder.decompress_vec(data).map_err(std::io::Error::other);
    }
    let mut out = Vec::new();
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| invalid("short xerial header"))?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("short block length"))?;
        let len = usize::try_from(i32::from_be_bytes(len_bytes))
            .map_err(|_| invalid("negative block length"))?;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| invalid("block runs past the data"))?;
        let size = snap::raw::decompress_len(block).map_err(std::io::Error::other)?;
        if (out.len() + size) as u64 > MAX_DECOMPRESSED_BYTES {
            return Err(invalid("the batch decompresses to more than 256 MiB"));
        }
        out.extend_from_slice(
            &decoder
                .decompress_vec(block)
                .map_err(std::io::Error::other)?,
        );
        rest = &rest[4 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordBatch;
    use crate::batch::{BatchBuilder, BatchOptions};

    fn builder() -> BatchBuilder {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for i in 0..500 {
            let value = format!("value {i} {}", "x".repeat(i % 50));
            builder.append(
                1_700_000_000_000 + i as i64,
                Some(format!("k{i}").as_bytes()),
                Some(value.as_bytes()),
                &[],
            );
        }
        builder
    }

    #[test]
    fn every_codec_round_trips_and_shrinks_repetitive_records() {
        let plain = builder().finish();
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let records = builder();
            let compressed = compress(codec, records.records()).unwrap();
            let bytes = records.finish_compressed(codec, &compressed);
            let batch = RecordBatch::new(&bytes).unwrap();
            batch.validate_records().unwrap();
            assert_eq!(batch.compression(), Some(codec));
            assert_eq!(batch.record_count(), 500);
            assert!(
                bytes.len() < plain.len() / 2,
                "{codec:?}: {} vs {}",
                bytes.len(),
                plain.len()
            );
            let records = decompress(codec, batch.records_section()).unwrap();
            let values: Vec<Vec<u8>> = batch
                .records_from(&records)
                .map(|r| r.unwrap().value().unwrap().to_vec())
                .collect();
            assert_eq!(values.len(), 500);
            assert_eq!(
                values[499],
                format!("value 499 {}", "x".repeat(499 % 50)).into_bytes()
            );
        }
    }

    #[test]
    fn snappy_writes_kafkas_xerial_framing_and_reads_raw_blocks_too() {
        let data = b"spool spool spool spool spool".repeat(3000);
        let framed = compress(Codec::Snappy, &data).unwrap();
        assert_eq!(&framed[..8], &XERIAL_MAGIC);
        assert_eq!(&framed[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(decompress(Codec::Snappy, &framed).unwrap(), data);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Codec::Snappy, &raw).unwrap(), data);
    }

    #[test]
    fn damaged_or_exploding_input_is_an_error_not_a_crash() {
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            assert!(
                decompress(codec, b"\x82SNAPPY\x00garbage-garbage").is_err(),
                "{codec:?}"
            );
        }
        let bomb =
            zstd::stream::encode_all(std::io::repeat(0).take(MAX_DECOMPRESSED_BYTES + 10), 1)
                .unwrap();
        assert!(decompress(Codec::Zstd, &bomb).is_err());
    }
}
