//! The harness of Spool's system tests: the image built from this checkout, three-node
//! clusters started from `deploy/docker-compose.yml` under project names of their own,
//! faults done to their containers, and waits that always end.
//!
//! Where no Docker engine answers, [`Docker::detect`] says why and the tests skip, saying
//! so on stderr.

mod cluster;
mod docker;
mod inside;

pub use cluster::ComposeCluster;
pub use docker::{Docker, workspace_root};
pub use inside::{IN_NETWORK_PORT, InsideReport, InsideWriter};

/// What went wrong driving Docker or the cluster.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("no node {0} in the cluster")]
    NoSuchNode(u64),
    #[error(transparent)]
    Testkit(#[from] spool_testkit::TestkitError),
    #[error(transparent)]
    Client(#[from] spool_client::ClientError),
}

/// Set to `require` (as CI does where Docker answers), a test that cannot use Docker fails
/// instead of skipping.
pub const REQUIRE_VARIABLE: &str = "SPOOL_SYSTEM_TESTS";

/// The engine, or `None` after saying on stderr why `test` is skipped.
///
/// # Panics
/// When Docker cannot be used and `SPOOL_SYSTEM_TESTS=require`.
pub async fn docker_or_skip(test: &str) -> Option<Docker> {
    match Docker::detect().await {
        Ok(docker) => Some(docker),
        Err(reason) if std::env::var(REQUIRE_VARIABLE).as_deref() == Ok("require") => {
            panic!("{test} cannot run although {REQUIRE_VARIABLE}=require: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            None
        }
    }
}
