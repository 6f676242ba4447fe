//! The controller as the rest of the node uses it: commands and registrations taken on
//! any node and carried out by the leader (here, or forwarded over gRPC), and the
//! broker's registration and heartbeat loop.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::commands::{Command, HeartbeatReply, Registration};
use crate::controller::Controller;
use crate::error::ControllerError;
use crate::state::{ClusterState, LeaderReport};

/// How long a command looks for a controller leader before giving up.
const FIND_LEADER: Duration = Duration::from_secs(10);

/// What the broker tells the controller in heartbeats.
pub trait LeaderSource: Send + Sync + 'static {
    /// Partitions this broker leads whose leader or in-sync voters `state` does not show.
    fn leader_reports(&self, state: &ClusterState) -> Vec<LeaderReport>;
}

/// Where this broker stands with the controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub registered: bool,
    /// Registration was refused for good (another live broker has the id).
    pub refused: Option<String>,
    /// The metadata offset the controller had at the last answer: this node's metadata
    /// is current once it has applied this far.
    pub controller_offset: i64,
}

/// A call carried out at the controller leader.
#[derive(Debug, Clone)]
enum Call {
    Execute(Command),
    Register(Registration),
    Heartbeat(Vec<LeaderReport>),
}

enum Answer {
    Offset(i64),
    Heartbeat(HeartbeatReply),
}

impl Controller {
    /// Carries out a command at the controller leader and waits until this node's
    /// metadata shows it. Answers with the metadata offset it was written at.
    pub async fn execute(&self, command: Command) -> Result<i64, ControllerError> {
        let Answer::Offset(offset) = self.at_leader(Call::Execute(command)).await? else {
            return Err(ControllerError::InvalidRequest {
                reason: "the controller answered out of turn".into(),
            });
        };
        self.wait_applied(offset).await?;
        Ok(offset)
    }

    async fn register(&self, registration: Registration) -> Result<i64, ControllerError> {
        match self.at_leader(Call::Register(registration)).await? {
            Answer::Offset(offset) => Ok(offset),
            Answer::Heartbeat(_) => Err(ControllerError::InvalidRequest {
                reason: "the controller answered out of turn".into(),
            }),
        }
    }

    async fn heartbeat(
        &self,
        reports: Vec<LeaderReport>,
    ) -> Result<HeartbeatReply, ControllerError> {
        match self.at_leader(Call::Heartbeat(reports)).await? {
            Answer::Heartbeat(reply) => Ok(reply),
            Answer::Offset(_) => Err(ControllerError::InvalidRequest {
                reason: "the controller answered out of turn".into(),
            }),
        }
    }

    /// Carries out `call` here (`None`) or at the leader's address.
    async fn call_once(&self, call: Call, at: Option<String>) -> Result<Answer, ControllerError> {
        let (broker, incarnation) = (self.options.broker_id, self.options.incarnation);
        let stopping = self.stopping.load(std::sync::atomic::Ordering::Acquire);
        match (call, at) {
            (Call::Execute(c), None) => self.execute_local(c).await.map(Answer::Offset),
            (Call::Execute(c), Some(a)) => self.peers.forward(&a, c).await.map(Answer::Offset),
            (Call::Register(r), None) => self.register_local(r).await.map(Answer::Offset),
            (Call::Register(r), Some(a)) => self.peers.register(&a, &r).await.map(Answer::Offset),
            (Call::Heartbeat(h), None) => self
                .heartbeat_local(broker, incarnation, h, stopping)
                .await
                .map(Answer::Heartbeat),
            (Call::Heartbeat(h), Some(a)) => self
                .peers
                .heartbeat(&a, broker, incarnation, h, stopping)
                .await
                .map(Answer::Heartbeat),
        }
    }

    /// A controlled shutdown begins: tells the controller leader, which ends this broker's
    /// lease and fences it, and waits (at most `within`) until the metadata shows it
    /// fenced, so that no leadership is handed back to it while it hands its own over.
    pub async fn announce_stopping(&self, within: std::time::Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let id = self.options.broker_id;
        let mut state = self.state.subscribe();
        let _ = tokio::time::timeout(within, async {
            if let Err(error) = self.heartbeat(Vec::new()).await {
                tracing::debug!(%error, "the controller did not hear of the stop");
            }
            let _ = state
                .wait_for(|s| s.brokers.get(&id).is_none_or(|b| b.fenced))
                .await;
        })
        .await;
    }

    /// Runs `call` at the controller leader, following NOT_CONTROLLER answers until a
    /// leader takes it or `FIND_LEADER` passes.
    async fn at_leader(&self, call: Call) -> Result<Answer, ControllerError> {
        let deadline = tokio::time::Instant::now() + FIND_LEADER;
        let mut changes = self.replica.changes();
        let mut hint: Option<String> = None;
        // With no leader known (a broker that has not joined yet), ask the voters in turn.
        let voters: Vec<String> = self
            .options
            .voters
            .iter()
            .filter(|(id, _)| **id != self.options.broker_id)
            .map(|(_, address)| address.clone())
            .collect();
        let mut attempt = 0usize;
        loop {
            attempt += 1;
            let target = if self.is_leader() {
                Some(None)
            } else if let Some(address) = hint.take() {
                Some(Some(address))
            } else {
                self.leader()
                    .filter(|(id, _)| *id != self.options.broker_id)
                    .map(|(_, address)| Some(address))
                    .or_else(|| {
                        (!voters.is_empty()).then(|| Some(voters[attempt % voters.len()].clone()))
                    })
            };
            let open = tokio::time::Instant::now() < deadline;
            if let Some(target) = target {
                // A call to a leader that is cut off would wait out its timeout: give it
                // up as soon as this node learns of another leader, and go there. The
                // old one cannot commit what it was given without a majority.
                let remote = target.is_some();
                let before = self.leader().map(|(id, _)| id);
                let moved = async {
                    let mut moves = self.replica.changes();
                    if !remote {
                        std::future::pending::<()>().await;
                    }
                    while self.leader().map(|(id, _)| id) == before {
                        if !moves.changed().await {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                let answer = tokio::select! {
                    answer = self.call_once(call.clone(), target) => Some(answer),
                    () = moved => None,
                };
                match answer {
                    None if open => continue,
                    None => return Err(self.not_controller()),
                    Some(Err(ControllerError::NotController { address, .. })) if open => {
                        hint = address
                    }
                    Some(Err(ControllerError::Unreachable { .. })) if open => {}
                    Some(other) => return other,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.not_controller());
            }
            if hint.is_none() {
                // Wait, briefly, for this node to learn of a (new) leader.
                let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
            }
        }
    }

    /// Registers this broker and heartbeats until the controller is dropped. The status
    /// says whether it is registered, or was refused.
    pub fn start_agent(
        self: &Arc<Self>,
        source: Weak<dyn LeaderSource>,
    ) -> watch::Receiver<AgentStatus> {
        let (status, watch) = watch::channel(AgentStatus::default());
        let controller = Arc::downgrade(self);
        let every = self.options.heartbeat_interval;
        // A crashed earlier life of this broker holds its lease until it lapses: only a
        // refusal that outlasts two lease periods means another live node has the id.
        let patience = 2 * self.options.session_timeout;
        tokio::spawn(async move {
            let mut refused_since: Option<std::time::Instant> = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(controller) = controller.upgrade() else {
                    return;
                };
                if controller
                    .stopping
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    // Keeps saying so (a new controller leader would give it a lease),
                    // and never registers again in this life.
                    let _ = controller.heartbeat(Vec::new()).await;
                    continue;
                }
                if !status.borrow().registered {
                    let registration = Registration {
                        broker: controller.options.broker_id,
                        incarnation: controller.options.incarnation,
                        address: controller.options.address.clone(),
                        client_address: controller.options.client_address.clone(),
                        external_address: controller.options.external_address.clone(),
                        rack: controller.options.rack.clone(),
                    };
                    match controller.register(registration).await {
                        Ok(offset) => status.send_replace(AgentStatus {
                            registered: true,
                            refused: None,
                            controller_offset: offset,
                        }),
                        Err(error)
                            if error.code() == spool_types::ErrorCode::BrokerIdInUse
                                && refused_since
                                    .get_or_insert_with(std::time::Instant::now)
                                    .elapsed()
                                    < patience =>
                        {
                            tracing::info!(%error, "registration refused; waiting for the earlier lease to lapse");
                            continue;
                        }
                        Err(error) if error.code() == spool_types::ErrorCode::BrokerIdInUse => {
                            tracing::error!(%error, "registration refused");
                            status.send_replace(AgentStatus {
                                registered: false,
                                refused: Some(error.to_string()),
                                controller_offset: 0,
                            });
                            return;
                        }
                        Err(error) => {
                            tracing::debug!(%error, "registration not taken yet");
                            continue;
                        }
                    };
                    continue;
                }
                let reports = match source.upgrade() {
                    Some(source) => source.leader_reports(&controller.current()),
                    None => return,
                };
                match controller.heartbeat(reports).await {
                    Ok(reply) => status.send_modify(|s| {
                        s.registered = !reply.register;
                        s.controller_offset = reply.metadata_offset;
                    }),
                    Err(error) => tracing::debug!(%error, "heartbeat not taken"),
                }
            }
        });
        watch
    }
}
