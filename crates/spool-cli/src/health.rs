//! `spool health`: exits 0 when a node answers ready on its HTTP port. Container health
//! checks run it (an image with nothing but `spool` has no shell or curl).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The node's HTTP listener, host:port.
    #[arg(long, env = "SPOOL_HEALTH_HTTP", default_value = "127.0.0.1:7071")]
    http: String,
    /// Only that the process answers (`/health`), not that it serves (`/ready`).
    #[arg(long)]
    live: bool,
}

pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let path = if args.live { "/health" } else { "/ready" };
    let status = tokio::time::timeout(Duration::from_secs(5), get(&args.http, path))
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer within 5 s", args.http))??;
    if status == 200 {
        crate::say!("{path}: ok");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{path}: HTTP {status}");
        Ok(ExitCode::FAILURE)
    }
}

/// The status code of a plain HTTP/1.0 GET: a few lines do not need an HTTP client.
async fn get(address: &str, path: &str) -> anyhow::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer from {address}: {line:?}"))
}
