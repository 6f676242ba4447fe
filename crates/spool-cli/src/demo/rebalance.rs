//! `spool demo rebalance`: a producer writes orders while members of one group join,
//! crash (SIGKILL), leave and restart on a schedule. After each step the demo waits for
//! the group to settle (every partition owned by one live member, counts differing by at
//! most one) and shows how long that took; at the end it checks the whole history (see
//! `ledger`) and exits non-zero if any rule broke.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use spool_client::{Client, NewTopic, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::ledger::{Ledger, Verdict, Violation};
use super::schedule::{Action, default_schedule};
use super::view::{self, Snapshot};
use super::worker::{Line, now};
use crate::{Context, Output, say};

#[derive(Debug, Args)]
pub struct RebalanceArgs {
    /// The topic to write (created; default: a new one per run).
    #[arg(long)]
    topic: Option<String>,
    /// The group (default: a new one per run).
    #[arg(long)]
    group: Option<String>,
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// Records per second the producer writes.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Pause after the group settles, before the next step.
    #[arg(long, default_value_t = 2000)]
    step_ms: u64,
    /// The group's session timeout: how long a killed member's partitions wait.
    #[arg(long, default_value_t = 6000)]
    session_timeout_ms: u64,
    /// A step not settled within this long fails the demo.
    #[arg(long, default_value_t = 60_000)]
    settle_timeout_ms: u64,
}

/// What the demo's parts tell its main loop.
enum Event {
    Line(String, String),
    Exited(String),
    Acked(u32, i64),
    Committed(u64, Vec<(u32, i64)>),
    /// The members the coordinator shows holding each partition (assigned or revoking).
    Holders(u64, Vec<(u32, Vec<String>)>),
}

/// A step and how long the group took to settle after it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub action: String,
    pub at_ms: u64,
    pub settled_ms: Option<u64>,
}

struct Member {
    child: Child,
    /// Still meant to be in the group (not killed, not told to leave).
    live: bool,
}

struct Demo {
    topic: String,
    group: String,
    partitions: u32,
    bootstrap: String,
    ledger: Ledger,
    members: BTreeMap<String, Member>,
    events: mpsc::UnboundedReceiver<Event>,
    sender: mpsc::UnboundedSender<Event>,
    started: Instant,
    steps: Vec<Step>,
    output: Output,
    terminal: bool,
}

pub async fn run(args: RebalanceArgs, context: &Context) -> anyhow::Result<ExitCode> {
    let client = context.connect().await?;
    let run_id = now() / 1_000_000;
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("demo-orders-{run_id}"));
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("demo-workers-{run_id}"));
    client
        .create_topic(NewTopic {
            name: topic.clone(),
            partitions: args.partitions,
            ..NewTopic::default()
        })
        .await?;
    // Short sessions, so that a killed member's partitions move within the demo.
    crate::group::coordinator(&client, &group)
        .await?
        .alter_group(
            &group,
            Some(Duration::from_millis(args.session_timeout_ms)),
            Some(Duration::from_millis(
                (args.session_timeout_ms / 6).max(100),
            )),
        )
        .await?;
    let (sender, events) = mpsc::unbounded_channel();
    let mut demo = Demo {
        topic,
        group,
        partitions: args.partitions,
        bootstrap: context.bootstrap.join(","),
        ledger: Ledger::new(args.partitions),
        members: BTreeMap::new(),
        events,
        sender,
        started: Instant::now(),
        steps: Vec::new(),
        output: context.output,
        terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    demo.note(&format!(
        "topic {} ({} partitions), group {}, {} records/s, session timeout {} ms",
        demo.topic, demo.partitions, demo.group, args.rate, args.session_timeout_ms
    ));
    let stop = watch::Sender::new(false);
    let producer = tokio::spawn(produce(
        client.clone(),
        demo.topic.clone(),
        args.rate,
        stop.subscribe(),
        demo.sender.clone(),
    ));
    let sampler = tokio::spawn(sample_group(
        client.clone(),
        demo.group.clone(),
        stop.subscribe(),
        demo.sender.clone(),
    ));

    let settle_within = Duration::from_millis(args.settle_timeout_ms);
    let mut failures = Vec::new();
    for action in default_schedule() {
        let at = demo.started.elapsed();
        demo.act(&action).await;
        let settled = demo.pump(settle_within, Demo::settled).await;
        demo.steps.push(Step {
            action: action.to_string(),
            at_ms: at.as_millis() as u64,
            settled_ms: settled.then(|| (demo.started.elapsed() - at).as_millis() as u64),
        });
        demo.note_step();
        if !settled {
            failures.push(Violation {
                rule: "group did not settle",
                detail: format!("after \"{action}\" within {} ms", args.settle_timeout_ms),
            });
            break;
        }
        demo.pump(Duration::from_millis(args.step_ms), |_| false)
            .await;
    }

    // The producer stops; the members catch up, then leave cleanly, committing.
    let _ = stop.send(true);
    producer.await??;
    if !demo.pump(settle_within, |d| d.ledger.caught_up()).await {
        failures.push(Violation {
            rule: "members did not catch up",
            detail: format!("backlog {:?}", demo.ledger.backlog()),
        });
    }
    let _ = sampler.await;
    let names: Vec<String> = demo.members.keys().cloned().collect();
    for name in &names {
        demo.terminate(name);
    }
    if !demo
        .pump(Duration::from_secs(30), |d| d.members.is_empty())
        .await
    {
        failures.push(Violation {
            rule: "members did not stop",
            detail: format!("{:?}", demo.members.keys().collect::<Vec<_>>()),
        });
    }
    for (name, mut member) in std::mem::take(&mut demo.members) {
        let _ = member.child.kill();
        let _ = member.child.wait();
        demo.ledger.member_gone(&name);
    }
    failures.extend(demo.final_commits(&client).await);
    let mut verdict = demo.ledger.verdict();
    verdict.violations.extend(failures);
    verdict.passed = verdict.violations.is_empty();
    demo.report(&verdict);
    Ok(if verdict.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

impl Demo {
    /// Every partition owned by exactly one live member, counts differing by at most one.
    fn settled(&self) -> bool {
        let live: Vec<&str> = self
            .members
            .iter()
            .filter(|(_, m)| m.live)
            .map(|(n, _)| n.as_str())
            .collect();
        if live.is_empty() {
            return true;
        }
        let mut counts: BTreeMap<&str, usize> = live.iter().map(|n| (*n, 0)).collect();
        for owners in self.ledger.owners() {
            let live_owners: Vec<&str> = owners
                .into_iter()
                .filter(|o| counts.contains_key(o))
                .collect();
            match live_owners.as_slice() {
                [one] => *counts.entry(one).or_default() += 1,
                _ => return false,
            }
        }
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        max - min <= 1
    }

    async fn act(&mut self, action: &Action) {
        self.note(&format!(
            "{:>7.1} s  {action}",
            self.started.elapsed().as_secs_f64()
        ));
        match action {
            Action::Join(names) => {
                for name in names {
                    self.spawn(name, None);
                }
            }
            Action::JoinStatic(name, instance) => self.spawn(name, Some(instance)),
            Action::Kill(names) => {
                for name in names {
                    if let Some(member) = self.members.get_mut(name.as_str()) {
                        member.live = false;
                        // SIGKILL: no commit, no leave; the session runs out.
                        let _ = member.child.kill();
                    }
                }
            }
            Action::Leave(name) => self.terminate(name),
            Action::Restart { old, new, instance } => {
                self.terminate(old);
                let old_name = old.clone();
                self.pump(Duration::from_secs(30), |d| {
                    !d.members.contains_key(&old_name)
                })
                .await;
                self.spawn(new, Some(instance));
            }
        }
    }

    fn spawn(&mut self, name: &str, instance: Option<&String>) {
        let exe = std::env::current_exe().unwrap_or_else(|_| "spool".into());
        let mut command = Command::new(exe);
        command
            .args(["--bootstrap", &self.bootstrap, "demo", "worker"])
            .args(["--topic", &self.topic, "--group", &self.group])
            .env("SPOOL_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(instance) = instance {
            command.args(["--instance-id", instance]);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                self.note(&format!("could not start member {name}: {error}"));
                return;
            }
        };
        if let Some(stdout) = child.stdout.take() {
            let (sender, name) = (self.sender.clone(), name.to_string());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = sender.send(Event::Line(name.clone(), line));
                }
                let _ = sender.send(Event::Exited(name));
            });
        }
        self.members
            .insert(name.to_string(), Member { child, live: true });
    }

    /// SIGTERM: the member commits and leaves.
    fn terminate(&mut self, name: &str) {
        if let Some(member) = self.members.get_mut(name) {
            member.live = false;
            let _ = Command::new("kill")
                .args(["-TERM", &member.child.id().to_string()])
                .status();
        }
    }

    /// Handles events until `done` holds (true) or `within` passes (false), redrawing
    /// the view on a terminal.
    async fn pump(&mut self, within: Duration, done: impl Fn(&Demo) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let mut redraw = tokio::time::interval(Duration::from_millis(250));
        loop {
            // Whatever is already queued counts before the verdict: the last
            // acknowledgements may be waiting behind it.
            while let Ok(event) = self.events.try_recv() {
                self.handle(event);
            }
            if done(self) {
                return true;
            }
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => return done(self),
                },
                _ = redraw.tick() => self.draw(),
                () = tokio::time::sleep_until(deadline) => return done(self),
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Line(member, line) => {
                if line.starts_with("member ") {
                    return;
                }
                match line.parse::<Line>() {
                    Ok(Line(at, report)) => self.ledger.report(&member, at, report),
                    Err(error) => self.note(&format!("{member}: {error}")),
                }
            }
            Event::Exited(name) => {
                // Every line it wrote has been read: its stints end here.
                if let Some(mut member) = self.members.remove(&name) {
                    let _ = member.child.wait();
                }
                self.ledger.member_gone(&name);
            }
            Event::Acked(p, o) => self.ledger.acknowledged(p, o),
            Event::Committed(at, offsets) => {
                for (p, o) in offsets {
                    self.ledger.committed_sample(at, p, o);
                }
            }
            Event::Holders(at, holders) => {
                for (p, members) in holders {
                    self.ledger.holders_sample(at, p, &members);
                }
            }
        }
    }

    fn draw(&self) {
        if !self.terminal || self.output == Output::Json {
            return;
        }
        let snapshot = Snapshot {
            topic: &self.topic,
            group: &self.group,
            elapsed: self.started.elapsed(),
            owners: self.ledger.owners(),
            backlog: self.ledger.backlog(),
            acknowledged: self.ledger.acknowledged_count(),
            processed: self.ledger.processed_count(),
            members: self
                .members
                .iter()
                .map(|(n, m)| (n.as_str(), m.live))
                .collect(),
            steps: &self.steps,
        };
        view::draw(&snapshot);
    }

    fn note(&self, line: &str) {
        if !self.terminal && self.output == Output::Text {
            say!("{line}");
        }
    }

    fn note_step(&self) {
        if let Some(step) = self.steps.last() {
            match step.settled_ms {
                Some(ms) => self.note(&format!("           settled in {ms} ms")),
                None => self.note("           did not settle"),
            }
        }
    }

    /// Once every member has left cleanly, the group's committed offsets reach the end of
    /// every partition: nothing is left to read again.
    async fn final_commits(&mut self, client: &Client) -> Vec<Violation> {
        let described = match crate::group::coordinator(client, &self.group).await {
            Ok(c) => c
                .describe_group(&self.group)
                .await
                .map_err(anyhow::Error::from),
            Err(error) => Err(error),
        };
        let described = match described {
            Ok(d) => d,
            Err(error) => {
                return vec![Violation {
                    rule: "committed offsets unreadable",
                    detail: error.to_string(),
                }];
            }
        };
        let committed: BTreeMap<u32, i64> = described
            .offsets
            .iter()
            .filter(|o| o.topic == self.topic)
            .map(|o| (o.partition, o.offset))
            .collect();
        let mut out = Vec::new();
        for (p, end) in self.ledger.acknowledged_ends().into_iter().enumerate() {
            let c = committed.get(&(p as u32)).copied().unwrap_or(-1);
            if end > 0 && c < end {
                out.push(Violation {
                    rule: "lag left after a clean stop",
                    detail: format!("partition {p}: committed {c}, acknowledged end {end}"),
                });
            }
        }
        out
    }

    fn report(&self, verdict: &Verdict) {
        if self.output == Output::Json {
            say!(
                "{}",
                serde_json::json!({
                    "topic": self.topic,
                    "group": self.group,
                    "steps": self.steps,
                    "verdict": verdict,
                })
            );
            return;
        }
        self.draw();
        say!();
        // On a terminal the view above lists the steps already.
        let steps: &[Step] = if self.terminal { &[] } else { &self.steps };
        if !steps.is_empty() {
            say!("rebalances");
        }
        for step in steps {
            let settled = step.settled_ms.map_or("did not settle".to_string(), |ms| {
                format!("settled in {ms} ms")
            });
            say!(
                "  {:>7.1} s  {:<48} {settled}",
                step.at_ms as f64 / 1000.0,
                step.action
            );
        }
        say!();
        say!("checks");
        let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
        let broke = |rule: &str| verdict.violations.iter().any(|v| v.rule == rule);
        say!(
            "  {} every acknowledged record processed ({} of {})",
            mark(verdict.missing == 0),
            verdict.acknowledged - verdict.missing,
            verdict.acknowledged
        );
        say!(
            "  {} no partition owned by two members at once ({} views of the coordinator checked too)",
            mark(!broke("two owners at once") && !broke("processed without owning")),
            verdict.coordinator_samples
        );
        say!(
            "  {} duplicates only from uncommitted work ({} records processed twice)",
            mark(!broke("committed work processed again")),
            verdict.duplicates
        );
        say!(
            "  {} stopped cleanly, the group has no lag",
            mark(!broke("lag left after a clean stop"))
        );
        for violation in &verdict.violations {
            say!("  {}: {}", violation.rule, violation.detail);
        }
        say!("{}", if verdict.passed { "PASSED" } else { "FAILED" });
    }
}

/// Writes `rate` records a second, keyed by order number, until told to stop; reports
/// each acknowledged record.
async fn produce(
    client: Client,
    topic: String,
    rate: u32,
    mut stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let producer = Producer::new(client, ProducerConfig::default());
    const TICK: Duration = Duration::from_millis(20);
    let mut pace = tokio::time::interval(TICK);
    let per_tick = f64::from(rate.max(1)) * TICK.as_secs_f64();
    let (mut due, mut next) = (0.0, 0u64);
    let mut acks = Vec::new();
    while !*stop.borrow() {
        tokio::select! {
            _ = pace.tick() => {}
            _ = stop.changed() => break,
        }
        due += per_tick;
        while due >= 1.0 {
            due -= 1.0;
            let record = ProducerRecord::new(topic.as_str(), format!("OrderCreated {next}"))
                .key(format!("order-{next}").into_bytes());
            next += 1;
            let delivery = producer.send(record).await?;
            let events = events.clone();
            acks.push(tokio::spawn(async move {
                if let Ok(meta) = delivery.await {
                    let _ = events.send(Event::Acked(meta.partition, meta.offset));
                }
            }));
        }
    }
    producer.flush().await;
    // Every acknowledgement is reported before the demo counts what must be processed.
    for ack in acks {
        let _ = ack.await;
    }
    Ok(())
}

/// Reads the group from its coordinator every 300 ms until told to stop: committed
/// offsets, and which members hold each partition.
async fn sample_group(
    client: Client,
    group: String,
    mut stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut coordinator: Option<Client> = None;
    let mut pace = tokio::time::interval(Duration::from_millis(300));
    while !*stop.borrow() {
        tokio::select! {
            _ = pace.tick() => {}
            _ = stop.changed() => break,
        }
        if coordinator.is_none() {
            coordinator = crate::group::coordinator(&client, &group).await.ok();
        }
        let Some(c) = coordinator.as_ref() else {
            continue;
        };
        match c.describe_group(&group).await {
            Ok(described) => {
                let at = now();
                let found = described
                    .offsets
                    .iter()
                    .filter(|o| o.offset >= 0)
                    .map(|o| (o.partition, o.offset))
                    .collect();
                let mut holders: BTreeMap<u32, Vec<String>> = BTreeMap::new();
                for member in &described.members {
                    for partitions in member.assigned.values().chain(member.revoking.values()) {
                        for p in partitions {
                            holders
                                .entry(*p)
                                .or_default()
                                .push(member.member_id.clone());
                        }
                    }
                }
                let _ = events.send(Event::Committed(at, found));
                let _ = events.send(Event::Holders(at, holders.into_iter().collect()));
            }
            Err(_) => coordinator = None,
        }
    }
}
