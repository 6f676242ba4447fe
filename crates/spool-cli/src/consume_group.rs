//! `spool consume TOPIC --group G`: reads as a member of a consumer group, printing what
//! the group assigns this member and committing what it has printed.

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use spool_client::{Consumer, ConsumerConfig, GroupConfig, GroupEvent, OffsetReset};

use crate::Context;
use crate::consume::{ConsumeArgs, broken_pipe_is_fine, write_record};

pub async fn run(args: ConsumeArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let Some(group) = args.group.clone() else {
        anyhow::bail!("no group given");
    };
    let client = context.connect().await?;
    // A partition the group has no committed offset for starts at the end, or with
    // --from-beginning at the start.
    let config = ConsumerConfig {
        offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        isolation: args.isolation,
        ..ConsumerConfig::default()
    };
    let mut settings = GroupConfig::new(&group, &[args.topic.as_str()]);
    settings.client_id = "spool-cli".into();
    settings.auto_commit = Some(Duration::from_secs(1));
    let mut consumer = Consumer::new(client, config).subscribe(settings);
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let limit = args.max_messages.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    // Ctrl-C or SIGTERM (`docker stop`): commit and leave, so the group moves on at once.
    let mut interrupted = std::pin::pin!(crate::node::wait_for_signal());
    while printed < limit {
        let event = tokio::select! {
            event = consumer.next_event() => event?,
            _ = &mut interrupted => break,
        };
        match event {
            GroupEvent::Record(record) => {
                if let Err(error) =
                    write_record(&mut out, &record, args.format).and_then(|()| out.flush())
                {
                    consumer.close().await?;
                    return broken_pipe_is_fine(error);
                }
                printed += 1;
            }
            GroupEvent::Assigned(partitions) => {
                eprintln!("assigned {}", names(&partitions));
            }
            GroupEvent::Revoked(partitions) => {
                eprintln!("revoked {}", names(&partitions));
            }
            GroupEvent::Lost(partitions) => {
                eprintln!("lost {} (out of the group: rejoining)", names(&partitions));
            }
        }
    }
    // What was printed is committed before the member leaves.
    consumer.close().await?;
    Ok(ExitCode::SUCCESS)
}

fn names(partitions: &[(String, u32)]) -> String {
    let list: Vec<String> = partitions.iter().map(|(t, p)| format!("{t}-{p}")).collect();
    list.join(", ")
}
