//! Any bytes given to the batch decoder yield a batch or a typed error, never a panic,
//! and a batch that validates walks to exactly its record count. Half the inputs get a
//! correct length, magic and CRC first, so the fuzzer reaches the record parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spool_log::RecordBatch;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut bytes = data.to_vec();
    if mode & 1 == 1 && bytes.len() >= 61 {
        let len = (bytes.len() - 12) as i32;
        bytes[8..12].copy_from_slice(&len.to_be_bytes());
        bytes[16] = 2;
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let Ok(batch) = RecordBatch::new(&bytes) else {
        return;
    };
    let valid = batch.validate_records().is_ok();
    if let Ok(records) = batch.records() {
        let mut count = 0i64;
        for record in records {
            let Ok(record) = record else { break };
            count += 1;
            let _ = (record.key(), record.value(), record.timestamp());
            for header in record.headers() {
                let _ = (header.key, header.value);
            }
        }
        if valid {
            assert_eq!(count, i64::from(batch.record_count()));
        }
    }
});
