//! A member of the demo's group, run as its own process so that it can be killed without
//! warning. It reports on stdout, one line per event, each stamped with the host clock:
//!
//! ```text
//! member <id>            once joined
//! A <µs> <p,p,...>       partitions assigned
//! V <µs> <p,p,...>       partitions revoked (their offsets committed first)
//! L <µs> <p,p,...>       partitions lost (no commit)
//! R <µs> <p> <offset>    a record processed
//! ```
//!
//! Each line is flushed before the member asks for its next event: the member commits
//! what it has processed only from inside that call, so nothing committed is unreported.
//! SIGTERM or Ctrl-C makes it commit and leave.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use spool_client::{Consumer, ConsumerConfig, GroupConfig, GroupEvent, OffsetReset};

use super::ledger::{Micros, Report};
use crate::Context;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    topic: String,
    #[arg(long)]
    group: String,
    /// Static membership: the same id after a restart keeps the member's partitions.
    #[arg(long)]
    instance_id: Option<String>,
    /// How often processed records are committed.
    #[arg(long, default_value_t = 500)]
    commit_interval_ms: u64,
}

pub fn now() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

pub async fn run(args: WorkerArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut settings = GroupConfig::new(&args.group, &[args.topic.as_str()]);
    settings.client_id = "spool-demo".into();
    settings.instance_id = args.instance_id;
    settings.auto_commit = Some(Duration::from_millis(args.commit_interval_ms));
    let mut consumer = Consumer::new(client, config).subscribe(settings);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "member {}", consumer.member_id())?;
    out.flush()?;
    let mut stop = std::pin::pin!(crate::node::wait_for_signal());
    loop {
        let event = tokio::select! {
            event = consumer.next_event() => event?,
            _ = &mut stop => break,
        };
        let line = match event {
            GroupEvent::Record(record) => Line(
                now(),
                Report::Processed {
                    partition: record.partition,
                    offset: record.offset,
                },
            ),
            GroupEvent::Assigned(p) => Line(now(), Report::Assigned(numbers(&p))),
            GroupEvent::Revoked(p) => Line(now(), Report::Revoked(numbers(&p))),
            GroupEvent::Lost(p) => Line(now(), Report::Lost(numbers(&p))),
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    consumer.close().await?;
    Ok(ExitCode::SUCCESS)
}

fn numbers(partitions: &[(String, u32)]) -> Vec<u32> {
    partitions.iter().map(|(_, p)| *p).collect()
}

/// One report as a line of the worker's output.
pub struct Line(pub Micros, pub Report);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |ps: &[u32]| ps.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        match &self.1 {
            Report::Assigned(p) => write!(f, "A {} {}", self.0, list(p)),
            Report::Revoked(p) => write!(f, "V {} {}", self.0, list(p)),
            Report::Lost(p) => write!(f, "L {} {}", self.0, list(p)),
            Report::Processed { partition, offset } => {
                write!(f, "R {} {partition} {offset}", self.0)
            }
        }
    }
}

impl std::str::FromStr for Line {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a worker report: {line:?}");
        let mut words = line.split(' ');
        let kind = words.next().ok_or_else(bad)?;
        let at: Micros = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let list = |w: Option<&str>| -> Result<Vec<u32>, String> {
            match w {
                None | Some("") => Ok(Vec::new()),
                Some(w) => w.split(',').map(|p| p.parse().map_err(|_| bad())).collect(),
            }
        };
        let report = match kind {
            "A" => Report::Assigned(list(words.next())?),
            "V" => Report::Revoked(list(words.next())?),
            "L" => Report::Lost(list(words.next())?),
            "R" => Report::Processed {
                partition: words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?,
                offset: words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?,
            },
            _ => return Err(bad()),
        };
        Ok(Line(at, report))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_read_back_as_written() {
        for report in [
            Report::Assigned(vec![0, 3, 7]),
            Report::Revoked(vec![]),
            Report::Lost(vec![2]),
            Report::Processed {
                partition: 5,
                offset: 1234,
            },
        ] {
            let text = Line(42, report.clone()).to_string();
            let back: Line = text.parse().unwrap();
            assert_eq!((back.0, back.1), (42, report));
        }
        assert!("R 1 x".parse::<Line>().is_err());
        assert!("member abc".parse::<Line>().is_err());
    }
}
