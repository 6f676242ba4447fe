//! The `spool.v1.Transactions` service: transaction coordinators, and the operator's view
//! of transactions.

use std::sync::Arc;

use spool_broker::{Broker, BrokerError};
use spool_proto::v1;
use tonic::{Request, Response, Status};

use super::Listener;

#[derive(Debug, Clone)]
pub(crate) struct TransactionsService {
    pub broker: Arc<Broker>,
    pub listener: Listener,
}

impl TransactionsService {
    fn status(&self, error: &BrokerError) -> Status {
        spool_proto::error_to_status(self.listener.wire_error(&self.broker, error))
    }
}

fn epoch(n: i32) -> Result<i16, Status> {
    i16::try_from(n).map_err(|_| Status::invalid_argument("producer epoch out of range"))
}

#[tonic::async_trait]
impl v1::transactions_server::Transactions for TransactionsService {
    async fn find_transaction_coordinator(
        &self,
        request: Request<v1::FindTransactionCoordinatorRequest>,
    ) -> Result<Response<v1::FindTransactionCoordinatorResponse>, Status> {
        let id = request.into_inner().transactional_id;
        let (node_id, address) = self
            .broker
            .find_transaction_coordinator(&id)
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::FindTransactionCoordinatorResponse {
            node_id,
            address: self.listener.address(&self.broker, node_id, address),
        }))
    }

    async fn add_partitions_to_txn(
        &self,
        request: Request<v1::AddPartitionsToTxnRequest>,
    ) -> Result<Response<v1::TxnResponse>, Status> {
        let r = request.into_inner();
        self.broker
            .add_partitions_to_txn(
                &r.transactional_id,
                r.producer_id,
                epoch(r.producer_epoch)?,
                spool_proto::partition_pairs(r.partitions),
            )
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::TxnResponse {}))
    }

    async fn add_offsets_to_txn(
        &self,
        request: Request<v1::AddOffsetsToTxnRequest>,
    ) -> Result<Response<v1::TxnResponse>, Status> {
        let r = request.into_inner();
        self.broker
            .add_offsets_to_txn(
                &r.transactional_id,
                r.producer_id,
                epoch(r.producer_epoch)?,
                &r.group,
            )
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::TxnResponse {}))
    }

    async fn txn_offset_commit(
        &self,
        request: Request<v1::TxnOffsetCommitRequest>,
    ) -> Result<Response<v1::TxnResponse>, Status> {
        let r = request.into_inner();
        self.broker
            .txn_offset_commit(
                r.producer_id,
                epoch(r.producer_epoch)?,
                &r.group,
                &r.member_id,
                r.member_epoch,
                super::groups::commits(r.offsets),
            )
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::TxnResponse {}))
    }

    async fn end_txn(
        &self,
        request: Request<v1::EndTxnRequest>,
    ) -> Result<Response<v1::EndTxnResponse>, Status> {
        let r = request.into_inner();
        let ended = self
            .broker
            .end_txn(
                &r.transactional_id,
                r.producer_id,
                epoch(r.producer_epoch)?,
                r.commit,
                r.bump_epoch,
            )
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::EndTxnResponse {
            producer_id: ended.producer_id,
            producer_epoch: i32::from(ended.epoch),
            bumped: r.bump_epoch,
        }))
    }

    async fn list_transactions(
        &self,
        _request: Request<v1::ListTransactionsRequest>,
    ) -> Result<Response<v1::ListTransactionsResponse>, Status> {
        let transactions = self
            .broker
            .list_transactions()
            .await
            .into_iter()
            .map(|t| v1::TransactionListing {
                transactional_id: t.transactional_id,
                producer_id: t.producer_id,
                state: t.state,
            })
            .collect();
        Ok(Response::new(v1::ListTransactionsResponse { transactions }))
    }

    async fn describe_transaction(
        &self,
        request: Request<v1::DescribeTransactionRequest>,
    ) -> Result<Response<v1::DescribeTransactionResponse>, Status> {
        let id = request.into_inner().transactional_id;
        let t = self
            .broker
            .describe_transaction(&id)
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::DescribeTransactionResponse {
            transactional_id: t.transactional_id,
            coordinator: t.coordinator,
            producer_id: t.producer_id,
            producer_epoch: i32::from(t.producer_epoch),
            state: t.state,
            timeout_ms: t.timeout_ms,
            started_ms: t.started_ms,
            updated_ms: t.updated_ms,
            partitions: spool_proto::topic_partitions_of(&t.partitions),
        }))
    }

    async fn abort_transaction(
        &self,
        request: Request<v1::AbortTransactionRequest>,
    ) -> Result<Response<v1::AbortTransactionResponse>, Status> {
        let id = request.into_inner().transactional_id;
        let aborted = self
            .broker
            .abort_transaction(&id)
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::AbortTransactionResponse { aborted }))
    }

    async fn describe_open_transactions(
        &self,
        request: Request<v1::DescribeOpenTransactionsRequest>,
    ) -> Result<Response<v1::DescribeOpenTransactionsResponse>, Status> {
        let r = request.into_inner();
        let open = self
            .broker
            .open_transactions(&r.topic, r.partition)
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::DescribeOpenTransactionsResponse {
            transactions: open
                .into_iter()
                .map(|t| v1::OpenTransaction {
                    producer_id: t.producer_id,
                    producer_epoch: i32::from(t.producer_epoch),
                    first_offset: t.first_offset,
                })
                .collect(),
        }))
    }

    async fn abort_hanging_transaction(
        &self,
        request: Request<v1::AbortHangingTransactionRequest>,
    ) -> Result<Response<v1::TxnResponse>, Status> {
        let r = request.into_inner();
        self.broker
            .abort_hanging_transaction(&r.topic, r.partition, r.producer_id)
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(v1::TxnResponse {}))
    }
}
