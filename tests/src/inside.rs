//! A `spool produce` run inside a node's container, writing to that node over its own
//! loopback: the one client that still reaches a node cut off the network. It writes
//! numbered records until stopped and reports the offset of each one acknowledged.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{ComposeCluster, SystemError};

/// The client listener a node serves its own network on (deploy/docker-compose.yml).
pub const IN_NETWORK_PORT: u16 = 7070;
/// How long the writer may take to give up once its input ends.
const FINISH_WITHIN: Duration = Duration::from_secs(60);

/// Records `"{prefix}-{n}"` for n = 0, 1, ... written to one partition, one a millisecond.
#[derive(Debug)]
pub struct InsideWriter {
    child: Child,
    stop: watch::Sender<bool>,
    feeder: JoinHandle<u64>,
    reader: JoinHandle<Result<(), String>>,
    said: JoinHandle<String>,
    /// The offset of each record acknowledged so far, in the order written (the writer
    /// acknowledges in that order and stops at its first failure).
    acked: Arc<Mutex<Vec<i64>>>,
}

/// What an inside writer sent and what it was told.
#[derive(Debug)]
pub struct InsideReport {
    /// Records sent.
    pub sent: u64,
    /// Offsets of the records acknowledged: record n is `acked[n]`.
    pub acked: Vec<i64>,
    /// What the writer said on stderr (why it stopped).
    pub said: String,
}

impl InsideWriter {
    /// Starts writing with acks=all to `partition` of `topic` on `node`, reaching it on
    /// loopback (its advertised name need not resolve).
    pub async fn start(
        cluster: &ComposeCluster,
        node: u64,
        topic: &str,
        partition: u32,
        prefix: &str,
    ) -> Result<Self, SystemError> {
        let own = format!("127.0.0.1:{IN_NETWORK_PORT}");
        let connect_to = format!("{node}={own}");
        let partition_arg = partition.to_string();
        let args = [
            "--bootstrap",
            own.as_str(),
            "--connect-to",
            connect_to.as_str(),
            "produce",
            topic,
            "--partition",
            partition_arg.as_str(),
            "--acks",
            "all",
            "--print-offsets",
            "--timeout-ms",
            "2000",
            "--delivery-timeout-ms",
            "5000",
        ];
        let container = cluster.container(node).await?;
        let mut all = vec!["exec", "-i", container.as_str(), "/spool"];
        all.extend(args);
        let mut child = Command::new("docker")
            .args(&all)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SystemError::Command {
                command: format!("docker {}", all.join(" ")),
                reason: e.to_string(),
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SystemError::Command {
                command: "docker exec".into(),
                reason: "no pipes to the writer".into(),
            });
        };
        let (stop, mut stopped) = watch::channel(false);
        let feed_prefix = prefix.to_string();
        let feeder = tokio::spawn(async move {
            let mut sent = 0u64;
            let mut every = tokio::time::interval(Duration::from_millis(1));
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = every.tick() => {}
                }
                let line = format!("{feed_prefix}-{sent}\n");
                tokio::select! {
                    _ = stopped.changed() => break,
                    written = stdin.write_all(line.as_bytes()) => {
                        if written.is_err() {
                            break;
                        }
                    }
                }
                sent += 1;
            }
            // Dropping stdin ends the writer's input.
            sent
        });
        let acked = Arc::new(Mutex::new(Vec::new()));
        // Read as it comes, so that a talkative writer never blocks on a full pipe.
        let said = tokio::spawn(async move {
            let mut said = String::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                said.push_str(&line);
                said.push('\n');
            }
            said
        });
        let partition_text = partition.to_string();
        let reader = tokio::spawn({
            let acked = Arc::clone(&acked);
            async move {
                let mut lines = BufReader::new(stdout).lines();
                loop {
                    let line = match lines.next_line().await {
                        Ok(Some(line)) => line,
                        Ok(None) => return Ok(()),
                        Err(error) => return Err(format!("reading the writer: {error}")),
                    };
                    // `partition offset` per acknowledged record, nothing else.
                    match line.split_once(' ') {
                        Some((p, offset)) if p == partition_text => match offset.parse::<i64>() {
                            Ok(offset) => acked.lock().push(offset),
                            Err(_) => return Err(format!("the writer printed {line:?}")),
                        },
                        _ => return Err(format!("the writer printed {line:?}")),
                    }
                }
            }
        });
        Ok(Self {
            child,
            stop,
            feeder,
            reader,
            said,
            acked,
        })
    }

    /// Records acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acked.lock().len()
    }

    /// Stops writing, waits for the writer to finish, and says what it was told.
    pub async fn finish(mut self) -> Result<InsideReport, SystemError> {
        let _ = self.stop.send(true);
        let failed = |reason: String| SystemError::Command {
            command: "docker exec ... spool produce".into(),
            reason,
        };
        let sent = self
            .feeder
            .await
            .map_err(|e| failed(format!("the feeder failed: {e}")))?;
        let waited = tokio::time::timeout(FINISH_WITHIN, async {
            let _ = self.child.wait().await;
            let read = (&mut self.reader).await;
            let said = (&mut self.said).await.unwrap_or_default();
            (said, read)
        })
        .await
        .map_err(|_| {
            failed(format!(
                "still running {FINISH_WITHIN:?} after its input ended"
            ))
        })?;
        let (said, read) = waited;
        read.map_err(|e| failed(format!("the reader failed: {e}")))?
            .map_err(failed)?;
        let acked = std::mem::take(&mut *self.acked.lock());
        Ok(InsideReport { sent, acked, said })
    }
}
