//! `spool log dump` and `spool log verify`: read a partition directory without changing it.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use spool_log::batch::Compression;
use spool_log::scan::{Expect, ScannedFrame, scan_frames};
use spool_log::verify::{IndexFileStatus, open_segment, segment_files, verify_dir};
use spool_log::{FrameKind, RecordBatch};

use crate::Output;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Print every frame, batch and (optionally) record of a partition directory.
    Dump {
        /// The partition directory (holding `*.log` segment files), or one segment file.
        path: PathBuf,
        /// Also print each record of uncompressed batches.
        #[arg(long)]
        records: bool,
        /// With --records, also print keys, values and headers.
        #[arg(long)]
        values: bool,
    },
    /// Check every CRC, every index entry and the continuity of a partition directory.
    /// Exits 0 only if everything checks out, 1 if anything does not.
    Verify {
        /// The partition directory.
        dir: PathBuf,
    },
}

pub fn run(command: LogCommand, output: Output) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Dump {
            path,
            records,
            values,
        } => dump(&path, records, values, output),
        LogCommand::Verify { dir } => verify(&dir, output),
    }
}

fn verify(dir: &Path, output: Output) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let report = verify_dir(dir).with_context(|| format!("could not verify {}", dir.display()))?;
    let mut out = BufWriter::new(io::stdout().lock());
    let frames: u64 = report.segments.iter().map(|s| s.frames).sum();
    let bytes: u64 = report.segments.iter().map(|s| s.bytes).sum();
    match output {
        Output::Text => {
            for s in &report.segments {
                let index = match s.index_file {
                    IndexFileStatus::Valid => "index ok",
                    IndexFileStatus::Missing => "no index (rebuilt on open)",
                    IndexFileStatus::Invalid => "index INVALID",
                    IndexFileStatus::Unchecked => "index not checked",
                };
                writeln!(
                    out,
                    "{}  {} frames ({} data)  {} bytes  next offset {}  {index}",
                    file_name(&s.path),
                    s.frames,
                    s.data_frames,
                    s.bytes,
                    s.next_offset
                )?;
            }
            for problem in &report.problems {
                writeln!(out, "PROBLEM: {problem}")?;
            }
            if report.is_clean() {
                writeln!(
                    out,
                    "ok: {} segments, {frames} frames, {bytes} bytes checked",
                    report.segments.len()
                )?;
            } else {
                writeln!(out, "FAILED: {} problem(s) found", report.problems.len())?;
            }
        }
        Output::Json => {
            let problems: Vec<_> = report
                .problems
                .iter()
                .map(|p| json!({"file": p.file, "position": p.position, "problem": p.kind.to_string()}))
                .collect();
            let value = json!({
                "ok": report.is_clean(),
                "segments": report.segments.len(),
                "frames": frames,
                "bytes": bytes,
                "problems": problems,
            });
            writeln!(out, "{value}")?;
        }
    }
    out.flush()?;
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn dump(path: &Path, records: bool, values: bool, output: Output) -> anyhow::Result<ExitCode> {
    let segments = if path.is_dir() {
        segment_files(path).with_context(|| format!("could not list {}", path.display()))?
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let mut damaged = false;
    for segment in segments {
        let (file, len, header) = open_segment(&segment)?;
        let header = match header {
            Ok(header) => header,
            Err(kind) => {
                eprintln!("{}: {kind}", segment.display());
                damaged = true;
                continue;
            }
        };
        if output == Output::Text {
            writeln!(
                out,
                "segment {}  base offset {}  base index {}  prev term {}  created {} ms  {} bytes",
                file_name(&segment),
                header.base_offset,
                header.base_index,
                header.prev_term,
                header.created_ms,
                len
            )?;
        }
        let start = Expect {
            next_index: header.base_index,
            next_offset: header.base_offset,
            last_term: header.prev_term,
        };
        let mut write_error = None;
        let outcome = scan_frames(&file, &segment, 64, len, start, |frame| {
            if write_error.is_none() {
                write_error = print_frame(&mut out, frame, records, values, output).err();
            }
        })?;
        if let Some(error) = write_error {
            return Err(error.into());
        }
        if let Some(stop) = outcome.stop {
            damaged = true;
            eprintln!(
                "{} at byte {}: {}",
                segment.display(),
                stop.position,
                stop.kind
            );
        }
    }
    out.flush()?;
    Ok(if damaged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_frame(
    out: &mut impl Write,
    frame: &ScannedFrame<'_>,
    records: bool,
    values: bool,
    output: Output,
) -> io::Result<()> {
    let h = &frame.header;
    let batch = (h.kind == FrameKind::Data)
        .then(|| RecordBatch::new(frame.payload).ok())
        .flatten();
    if output == Output::Json {
        let mut value = json!({
            "position": frame.position, "kind": h.kind.name(), "term": h.term,
            "index": h.index, "payload_size": h.payload_len,
        });
        if let Some(b) = &batch {
            value["batch"] = json!({
                "base_offset": b.base_offset(), "last_offset": b.last_offset(),
                "record_count": b.record_count(), "base_timestamp": b.base_timestamp(),
                "max_timestamp": b.max_timestamp(), "compression": codec_name(b.compression()),
                "producer_id": b.producer_id(), "crc": b.crc(),
            });
        }
        return writeln!(out, "{value}");
    }
    match &batch {
        None => writeln!(
            out,
            "| position {}  {}  term {}  index {}  payload {} bytes",
            frame.position,
            h.kind.name(),
            h.term,
            h.index,
            h.payload_len
        )?,
        Some(b) => writeln!(
            out,
            "| position {}  data  term {}  index {}  offsets {}..={}  count {}  timestamps {}..{}  compression {}  producer {}  crc {:#010x}  size {}",
            frame.position,
            h.term,
            h.index,
            b.base_offset(),
            b.last_offset(),
            b.record_count(),
            b.base_timestamp(),
            b.max_timestamp(),
            codec_name(b.compression()),
            b.producer_id(),
            b.crc(),
            b.len()
        )?,
    }
    let Some(b) = batch.filter(|_| records) else {
        return Ok(());
    };
    let Ok(iter) = b.records() else {
        return writeln!(
            out,
            "|   records are {}-compressed",
            codec_name(b.compression())
        );
    };
    for record in iter {
        let Ok(r) = record else {
            return writeln!(out, "|   malformed record");
        };
        write!(
            out,
            "|   offset {}  timestamp {}  key {} bytes  value {} bytes  headers {}",
            r.offset(),
            r.timestamp(),
            r.key().map_or(-1, |k| k.len() as i64),
            r.value().map_or(-1, |v| v.len() as i64),
            r.header_count()
        )?;
        if values {
            write!(out, "  key {}  value {}", show(r.key()), show(r.value()))?;
            for header in r.headers() {
                write!(out, "  {}={}", show(Some(header.key)), show(header.value))?;
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

fn show(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "null".to_string(),
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}

fn codec_name(codec: Option<Compression>) -> &'static str {
    match codec {
        Some(Compression::None) => "none",
        Some(Compression::Gzip) => "gzip",
        Some(Compression::Snappy) => "snappy",
        Some(Compression::Lz4) => "lz4",
        Some(Compression::Zstd) => "zstd",
        Some(_) | None => "unknown",
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
