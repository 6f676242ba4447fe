//! `spool offsets TOPIC`: earliest and latest offset of each partition.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use spool_client::OffsetSpec;

use crate::output::table;
use crate::{Context, Output};

#[derive(Debug, Args)]
pub struct OffsetsArgs {
    topic: String,
}

pub async fn run(args: OffsetsArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    let count = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let partitions: Vec<u32> = (0..count).collect();
    // Each partition's offsets are asked of its leader.
    let mut rows = Vec::new();
    for (leader, group) in crate::consume::by_leader(&client, &args.topic, &partitions).await? {
        let queries = group
            .iter()
            .flat_map(|&p| {
                [
                    (args.topic.clone(), p, OffsetSpec::Earliest),
                    (args.topic.clone(), p, OffsetSpec::Latest),
                ]
            })
            .collect();
        let offsets = leader.list_offsets(queries).await?;
        for (&p, pair) in group.iter().zip(offsets.chunks(2)) {
            rows.push((p, pair[0].clone()?, pair[1].clone()?));
        }
    }
    rows.sort_unstable_by_key(|(p, _, _)| *p);
    match context.output {
        Output::Text => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|(p, e, l)| {
                    vec![
                        p.to_string(),
                        e.to_string(),
                        l.to_string(),
                        (l - e).to_string(),
                    ]
                })
                .collect();
            crate::say!(
                "{}",
                table(&["PARTITION", "EARLIEST", "LATEST", "RECORDS"], &cells)
            );
        }
        Output::Json => {
            let list: Vec<_> = rows
                .iter()
                .map(|(p, e, l)| json!({"topic": args.topic, "partition": p, "earliest": e, "latest": l}))
                .collect();
            crate::say!("{}", json!(list));
        }
    }
    Ok(ExitCode::SUCCESS)
}
