//! `spool demo`: self-checking demonstrations against a running cluster.

mod ledger;
mod producer;
mod rebalance;
mod schedule;
mod view;
mod worker;

use std::process::ExitCode;

use clap::Subcommand;

use crate::Context;

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// A producer and a group whose members join, crash, leave and restart on a schedule,
    /// shown live; at the end every record is checked (processed, never by two owners at
    /// once, duplicates only from uncommitted work).
    Rebalance(rebalance::RebalanceArgs),
    /// Write `OrderCreated` records at a steady rate until stopped.
    Producer(producer::ProducerArgs),
    /// One member of the rebalance demo (started by it).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

pub async fn run(command: DemoCommand, context: &Context) -> anyhow::Result<ExitCode> {
    match command {
        DemoCommand::Rebalance(args) => rebalance::run(args, context).await,
        DemoCommand::Worker(args) => worker::run(args, context).await,
        DemoCommand::Producer(args) => producer::run(args, context).await,
    }
}
