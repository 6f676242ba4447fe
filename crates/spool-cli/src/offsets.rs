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
    let partitions = client.describe_topic(&args.topic).await?.partitions.len() as u32;
    let queries = (0..partitions)
        .flat_map(|p| {
            [
                (args.topic.clone(), p, OffsetSpec::Earliest),
                (args.topic.clone(), p, OffsetSpec::Latest),
            ]
        })
        .collect();
    let offsets = client.list_offsets(queries).await?;
    let mut rows = Vec::new();
    for (p, pair) in offsets.chunks(2).enumerate() {
        let earliest = pair[0].clone()?;
        let latest = pair[1].clone()?;
        rows.push((p, earliest, latest));
    }
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
