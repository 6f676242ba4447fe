//! Any bytes given to the batch decoder yield a batch or a typed error, never a panic,
//! and a batch that validates can be walked to its end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spool_log::RecordBatch;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = RecordBatch::new(data) else {
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
