use spool_types::ErrorCode;

/// An error the cluster reported, with its typed code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// With NOT_LEADER: the leader's node id and address, when known.
    pub leader: Option<(u64, String)>,
}

impl From<spool_proto::v1::Error> for ApiError {
    fn from(error: spool_proto::v1::Error) -> Self {
        Self {
            code: error.error_code(),
            message: error.message,
            leader: error.leader.map(|l| (l.node_id, l.address)),
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no bootstrap address given")]
    NoBootstrap,
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("could not reach Spool at {addresses}: {reason}")]
    Unreachable { addresses: String, reason: String },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the connection failed: {0}")]
    Transport(String),
}

impl ClientError {
    /// The typed code of an API error, if this is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            // Without a typed error, these come from the connection, not the broker: a
            // node going down resets the calls in flight (CANCELLED), or breaks the
            // HTTP/2 stream under them (an h2 protocol error is INTERNAL).
            tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
                if status.details().is_empty() =>
            {
                ClientError::Transport(status.message().to_string())
            }
            _ => ClientError::Api(spool_proto::status_error(&status).into()),
        }
    }
}
