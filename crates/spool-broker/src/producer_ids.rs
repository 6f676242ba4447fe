//! Producer ids for idempotent producers. The controller gives each broker blocks of ids
//! through the metadata log, so no id is given out twice, whichever node answers and
//! across controller failovers; a broker hands ids out from its block and asks for the
//! next block when it runs out. A block left over at a restart is never used again.

use std::ops::Range;

use spool_controller::Command;

use crate::broker::Broker;
use crate::error::BrokerError;

/// Ids a broker asks for at once.
const BLOCK: i64 = 1000;

/// This broker's current block of producer ids.
#[derive(Debug, Default)]
pub(crate) struct ProducerIds {
    block: tokio::sync::Mutex<Range<i64>>,
}

/// A producer's identity: its id and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

impl Broker {
    /// A new producer identity for an idempotent producer. (A transactional producer asks
    /// its transaction coordinator: see `init_transactional_producer`.)
    pub async fn init_producer_id(&self) -> Result<ProducerIdentity, BrokerError> {
        let mut block = self.producer_ids.block.lock().await;
        if block.is_empty() {
            let node = self.options.node_id;
            // Random: no other request of any process is likely to pick it.
            let request = crate::identity::new_incarnation();
            self.controller
                .execute(Command::AllocateProducerIds {
                    broker: node,
                    count: BLOCK,
                    request,
                })
                .await?;
            // Applied here by now. The block recorded for this node must be the one this
            // request got: any other (an earlier process's) may have been handed out.
            let state = self.controller.current();
            let given = state
                .producer_id_blocks
                .get(&node)
                .filter(|b| b.request == request)
                .ok_or_else(|| BrokerError::Replication {
                    reason: "the controller's answer to a producer id request is not in the metadata; retry".into(),
                })?;
            *block = given.first..given.first + given.count;
        }
        let producer_id = block.start;
        block.start += 1;
        Ok(ProducerIdentity {
            producer_id,
            epoch: 0,
        })
    }
}
