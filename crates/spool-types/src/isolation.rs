/// What a reader sees of transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum IsolationLevel {
    /// Every committed record, transactional or not, up to the high watermark.
    #[default]
    ReadUncommitted,
    /// Up to the last stable offset (nothing of a transaction still open), skipping the
    /// records of aborted transactions.
    ReadCommitted,
}

impl IsolationLevel {
    pub fn name(self) -> &'static str {
        match self {
            Self::ReadUncommitted => "read_uncommitted",
            Self::ReadCommitted => "read_committed",
        }
    }
}

impl std::str::FromStr for IsolationLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read_uncommitted" => Ok(Self::ReadUncommitted),
            "read_committed" => Ok(Self::ReadCommitted),
            other => Err(format!(
                "unknown isolation level {other:?}: read_uncommitted or read_committed"
            )),
        }
    }
}
