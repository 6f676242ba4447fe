use super::*;
use proptest::prelude::*;

fn sample_batch() -> Bytes {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    builder.append(1_000, Some(b"k1"), Some(b"v1"), &[]);
    builder.append(
        1_005,
        None,
        Some(b"value-two"),
        &[Header {
            key: b"trace",
            value: Some(b"abc"),
        }],
    );
    builder.append(999, Some(b"k3"), None, &[]);
    builder.finish()
}

use bytes::Bytes;

#[test]
fn crc32c_is_the_castagnoli_polynomial() {
    // The standard check value of CRC-32C.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn builder_matches_a_batch_assembled_by_hand_from_the_spec() {
    let mut builder = BatchBuilder::new(BatchOptions::default());
    builder.append(1_600_000_000_000, Some(b"a"), Some(b"bc"), &[]);
    let built = builder.finish();

    // One record: attributes 0, timestampDelta 0, offsetDelta 0, key "a", value "bc",
    // no headers. Varints are zig-zag: 1 -> 0x02, 2 -> 0x04, 0 -> 0x00.
    let record: &[u8] = &[0x00, 0x00, 0x00, 0x02, b'a', 0x04, b'b', b'c', 0x00];
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // attributes
    body.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    body.extend_from_slice(&1_600_000_000_000i64.to_be_bytes()); // baseTimestamp
    body.extend_from_slice(&1_600_000_000_000i64.to_be_bytes()); // maxTimestamp
    body.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    body.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    body.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    body.extend_from_slice(&1i32.to_be_bytes()); // record count
    body.push((record.len() * 2) as u8); // record length varint (zig-zag)
    body.extend_from_slice(record);
    let mut expected = Vec::new();
    expected.extend_from_slice(&0i64.to_be_bytes());
    expected.extend_from_slice(&((4 + 1 + 4 + body.len()) as i32).to_be_bytes());
    expected.extend_from_slice(&(-1i32).to_be_bytes());
    expected.push(2);
    expected.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    expected.extend_from_slice(&body);
    assert_eq!(&built[..], &expected[..]);
}

#[test]
fn records_round_trip_through_the_lazy_iterator() {
    let bytes = sample_batch();
    let batch = RecordBatch::new(&bytes).unwrap();
    batch.validate_records().unwrap();
    assert_eq!(batch.record_count(), 3);
    assert_eq!(batch.offset_count(), 3);
    assert_eq!(batch.base_timestamp(), 1_000);
    assert_eq!(batch.max_timestamp(), 1_005);
    assert_eq!(batch.compression(), Some(Compression::None));
    let records: Vec<Record<'_>> = batch.records().unwrap().map(Result::unwrap).collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].key(), Some(&b"k1"[..]));
    assert_eq!(records[1].key(), None);
    assert_eq!(records[1].value(), Some(&b"value-two"[..]));
    assert_eq!(records[1].timestamp(), 1_005);
    assert_eq!(records[2].timestamp(), 999);
    assert_eq!(records[2].value(), None);
    assert_eq!(records[2].offset(), 2);
    let headers: Vec<Header<'_>> = records[1].headers().collect();
    assert_eq!(
        headers,
        vec![Header {
            key: b"trace",
            value: Some(b"abc")
        }]
    );
}

#[test]
fn setters_change_only_fields_outside_the_crc() {
    let mut bytes = sample_batch().to_vec();
    set_base_offset(&mut bytes, 4242);
    set_partition_leader_epoch(&mut bytes, 7);
    let batch = RecordBatch::new(&bytes).unwrap();
    assert_eq!(batch.base_offset(), 4242);
    assert_eq!(batch.last_offset(), 4244);
    assert_eq!(batch.partition_leader_epoch(), 7);
    let offsets: Vec<i64> = batch
        .records()
        .unwrap()
        .map(|r| r.unwrap().offset())
        .collect();
    assert_eq!(offsets, vec![4242, 4243, 4244]);
}

#[test]
fn damaged_batches_are_refused_with_the_reason() {
    let good = sample_batch().to_vec();
    assert_eq!(
        RecordBatch::new(&good[..30]).unwrap_err(),
        BatchError::TooShort { len: 30 }
    );
    assert!(matches!(
        RecordBatch::new(&good[..good.len() - 1]).unwrap_err(),
        BatchError::LengthMismatch { .. }
    ));
    let mut magic = good.clone();
    magic[MAGIC] = 1;
    assert_eq!(
        RecordBatch::new(&magic).unwrap_err(),
        BatchError::UnsupportedMagic { found: 1 }
    );
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        RecordBatch::new(&flipped).unwrap_err(),
        BatchError::CrcMismatch { .. }
    ));
}

/// Rewrites a header field and fixes the CRC, as a buggy or hostile client might.
fn with_field(good: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut bytes = good.to_vec();
    bytes[at..at + value.len()].copy_from_slice(value);
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
    bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn a_record_count_that_disagrees_with_the_records_is_refused() {
    let good = sample_batch();
    let more = with_field(&good, RECORD_COUNT, &4i32.to_be_bytes());
    let more = with_field(&more, LAST_OFFSET_DELTA, &3i32.to_be_bytes());
    assert_eq!(
        RecordBatch::new(&more)
            .unwrap()
            .validate_records()
            .unwrap_err(),
        BatchError::RecordCountMismatch {
            declared: 4,
            found: 3
        }
    );
    let fewer = with_field(&good, RECORD_COUNT, &2i32.to_be_bytes());
    let fewer = with_field(&fewer, LAST_OFFSET_DELTA, &1i32.to_be_bytes());
    assert!(matches!(
        RecordBatch::new(&fewer)
            .unwrap()
            .validate_records()
            .unwrap_err(),
        BatchError::RecordCountMismatch { declared: 2, .. }
    ));
    let delta = with_field(&good, LAST_OFFSET_DELTA, &5i32.to_be_bytes());
    assert!(matches!(
        RecordBatch::new(&delta)
            .unwrap()
            .validate_records()
            .unwrap_err(),
        BatchError::OffsetDeltaMismatch { .. }
    ));
    let empty = with_field(&good, RECORD_COUNT, &0i32.to_be_bytes());
    assert_eq!(
        RecordBatch::new(&empty)
            .unwrap()
            .validate_records()
            .unwrap_err(),
        BatchError::Empty
    );
}

#[test]
fn a_batch_flagged_compressed_must_hold_compressed_records() {
    let good = sample_batch();
    // Plain records under a gzip flag, the CRC recomputed: refused, not stored.
    let gzip = with_field(&good, ATTRIBUTES, &1i16.to_be_bytes());
    let batch = RecordBatch::new(&gzip).unwrap();
    assert_eq!(batch.compression(), Some(Compression::Gzip));
    assert!(matches!(
        batch.validate_records(),
        Err(BatchError::Decompress {
            codec: Compression::Gzip,
            ..
        })
    ));
    assert_eq!(
        batch.records().unwrap_err(),
        BatchError::Compressed {
            codec: Compression::Gzip
        }
    );
    let unknown = with_field(&good, ATTRIBUTES, &7i16.to_be_bytes());
    assert_eq!(
        RecordBatch::new(&unknown)
            .unwrap()
            .validate_records()
            .unwrap_err(),
        BatchError::UnknownCompression { id: 7 }
    );
}

proptest! {
    #[test]
    fn any_built_batch_validates_and_reads_back(
        records in proptest::collection::vec(
            (any::<i64>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))),
            1..20)
    ) {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for (ts, key, value) in &records {
            let ts = ts >> 8; // keep deltas within i64
            let expected = builder.record_size(ts, key.as_deref(), value.as_deref(), &[]);
            let before = builder.size();
            builder.append(ts, key.as_deref(), value.as_deref(), &[]);
            prop_assert_eq!(builder.size() - before, expected);
        }
        let bytes = builder.finish();
        let batch = RecordBatch::new(&bytes).unwrap();
        batch.validate_records().unwrap();
        let read: Vec<_> = batch.records().unwrap().map(Result::unwrap).collect();
        prop_assert_eq!(read.len(), records.len());
        for (record, (ts, key, value)) in read.iter().zip(&records) {
            prop_assert_eq!(record.timestamp(), ts >> 8);
            prop_assert_eq!(record.key(), key.as_deref());
            prop_assert_eq!(record.value(), value.as_deref());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(batch) = RecordBatch::new(&bytes) {
            let _ = batch.validate_records();
            if let Ok(records) = batch.records() {
                for record in records.flatten() {
                    let _ = record.headers().count();
                }
            }
        }
    }
}

/// A batch flagged as compressed whose records section is not what it claims, with a
/// valid CRC (a producer's bug or an attacker): refused on validation, for every codec,
/// never stored for consumers to fail on. A well-formed compressed batch passes.
#[test]
fn compressed_batches_are_validated_record_by_record() {
    let records = {
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for i in 0..20u8 {
            builder.append(1_000, Some(&[i]), Some(&[i; 40]), &[]);
        }
        builder
    };
    let mut noise = vec![0u8; 300];
    let mut x = 0x9E37_79B9u32;
    for byte in &mut noise {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let good = codec::compress(codec, records.records()).expect("compress");
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for i in 0..20u8 {
            builder.append(1_000, Some(&[i]), Some(&[i; 40]), &[]);
        }
        let batch_bytes = builder.finish_compressed(codec, &good);
        RecordBatch::new(&batch_bytes)
            .expect("framing")
            .validate_records()
            .expect("a well-formed compressed batch");

        // Random bytes as the records section, the CRC made right.
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for i in 0..20u8 {
            builder.append(1_000, Some(&[i]), Some(&[i; 40]), &[]);
        }
        let garbage = builder.finish_compressed(codec, &noise);
        let batch = RecordBatch::new(&garbage).expect("the CRC covers the garbage");
        assert!(
            batch.validate_records().is_err(),
            "{codec:?}: random records section accepted"
        );

        // Records that decompress fine but are fewer than the header declares.
        let short = codec::compress(codec, &records.records()[..records.records().len() / 2])
            .expect("compress");
        let mut builder = BatchBuilder::new(BatchOptions::default());
        for i in 0..20u8 {
            builder.append(1_000, Some(&[i]), Some(&[i; 40]), &[]);
        }
        let truncated = builder.finish_compressed(codec, &short);
        assert!(
            RecordBatch::new(&truncated)
                .expect("framing")
                .validate_records()
                .is_err(),
            "{codec:?}: a short records section accepted"
        );
    }
}
