//! A `spool serve` process for the CLI's tests, driven by `spool` client commands.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const SPOOL: &str = env!("CARGO_BIN_EXE_spool");

/// A `spool serve` child and the address it reported.
pub struct Server {
    pub child: Child,
    pub grpc: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// As `start`, with more `spool serve` flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Self {
        let mut child = Command::new(SPOOL)
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--cluster-listen", "127.0.0.1:0"])
            .args(flags)
            .env("SPOOL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // The first line names the ports; the node serves once it is printed.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Self { child, grpc }
    }

    pub fn spool(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.spool_at(&self.grpc, args, stdin)
    }

    /// As `spool`, bootstrapped at `bootstrap` (another name for this node).
    pub fn spool_at(&self, bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(SPOOL)
            .args(args)
            .args(["--bootstrap", bootstrap])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_vec();
            std::thread::spawn(move || pipe.write_all(&input).unwrap());
        }
        child.wait_with_output().unwrap()
    }

    pub fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        self.ok_at(&self.grpc, args, stdin)
    }

    /// As `ok`, bootstrapped at `bootstrap`.
    pub fn ok_at(&self, bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.spool_at(bootstrap, args, stdin);
        assert!(
            out.status.success(),
            "spool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}
