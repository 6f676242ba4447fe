//! The Docker engine and compose, driven through their command-line tools (what a user
//! runs), every call bounded in time.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::Command;

use crate::SystemError;

/// Compose projects of these tests are named this, then the test process's id.
pub(crate) const PROJECT_PREFIX: &str = "spoolsys";
/// How long an ordinary docker call may take.
const CALL_WITHIN: Duration = Duration::from_secs(120);
/// How long building the image may take (a cold static build included).
const BUILD_WITHIN: Duration = Duration::from_secs(45 * 60);

/// A Docker engine that answers, and the compose tool to use with it.
#[derive(Debug, Clone)]
pub struct Docker {
    /// `docker-compose`, or `docker compose` where only the plugin is there.
    compose: Vec<String>,
}

impl Docker {
    /// The engine, or why the system tests cannot run here.
    pub async fn detect() -> Result<Self, String> {
        let version = call(
            "docker",
            &["version", "--format", "{{.Server.Version}}"],
            &[],
        )
        .await
        .map_err(|e| format!("no Docker engine answers ({e})"))?;
        if version.trim().is_empty() {
            return Err("no Docker engine answers (no server version)".into());
        }
        for compose in [vec!["docker-compose"], vec!["docker", "compose"]] {
            let mut args: Vec<&str> = compose[1..].to_vec();
            args.push("version");
            if call(compose[0], &args, &[]).await.is_ok() {
                return Ok(Self {
                    compose: compose.into_iter().map(str::to_string).collect(),
                });
            }
        }
        Err("Docker answers but neither docker-compose nor `docker compose` runs".into())
    }

    /// Runs `docker ARGS`.
    pub async fn docker(&self, args: &[&str]) -> Result<String, SystemError> {
        call("docker", args, &[]).await
    }

    /// Runs `docker ARGS` with `input` on its stdin; how it went, success or not.
    pub async fn docker_with_input(
        &self,
        args: &[&str],
        input: &[u8],
    ) -> Result<std::process::Output, SystemError> {
        run("docker", args, &[], Some(input)).await
    }

    /// Runs compose with `ARGS` for `project`, with `env` set.
    pub async fn compose(
        &self,
        project: &str,
        env: &[(String, String)],
        args: &[&str],
    ) -> Result<String, SystemError> {
        let env = with_compose_files(env);
        let mut all: Vec<&str> = self.compose[1..].iter().map(String::as_str).collect();
        all.extend(["--project-name", project]);
        all.extend(args);
        call(&self.compose[0], &all, &env).await
    }

    /// Removes the projects of test processes that are gone (killed before their clusters'
    /// `Drop` ran), with their containers and volumes.
    pub async fn remove_abandoned(&self) {
        let Ok(names) = self
            .docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("name={PROJECT_PREFIX}"),
                "--format",
                "{{.Label \"com.docker.compose.project\"}}",
            ])
            .await
        else {
            return;
        };
        let projects: std::collections::BTreeSet<&str> = names.lines().collect();
        for project in projects {
            let owner = project
                .strip_prefix(PROJECT_PREFIX)
                .and_then(|rest| rest.split('x').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let Some(pid) = owner else { continue };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            eprintln!("removing the abandoned compose project {project}");
            let _ = self
                .compose(project, &[], &["down", "-v", "-t", "1", "--remove-orphans"])
                .await;
        }
    }

    /// The same, blocking: for cleanup from `Drop`, where no runtime may be at hand.
    pub fn compose_blocking(
        &self,
        project: &str,
        env: &[(String, String)],
        args: &[&str],
    ) -> Result<(), SystemError> {
        let env = with_compose_files(env);
        let failed = |reason: String| SystemError::Command {
            command: format!("{} {}", self.compose.join(" "), args.join(" ")),
            reason,
        };
        let child = std::process::Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["--project-name", project])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        // Bounded like every other call: a hung engine must not hang the test. A thread
        // waits for the exit and says so; this side waits on that, with a deadline.
        let pid = child.id();
        let (exited, exit) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut child = child;
            let _ = exited.send(child.wait());
        });
        let status = match exit.recv_timeout(CALL_WITHIN) {
            Ok(waited) => waited.map_err(|e| failed(e.to_string()))?,
            Err(_) => {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                return Err(failed(format!("no answer within {CALL_WITHIN:?}")));
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(failed(status.to_string()))
        }
    }

    /// The image the tests run: built once per test process from this checkout with
    /// `deploy/build-image.sh` (cargo and docker make a rebuild of nothing quick), so a
    /// test never runs an image older than the code it tests.
    pub async fn image(&self) -> Result<String, SystemError> {
        static BUILT: tokio::sync::OnceCell<Result<String, String>> =
            tokio::sync::OnceCell::const_new();
        BUILT
            .get_or_init(|| async {
                let image = "spool:system-test".to_string();
                let script = workspace_root().join("deploy/build-image.sh");
                eprintln!("building the image {image} with {}", script.display());
                let mut command = Command::new(&script);
                command
                    .env("IMAGE", &image)
                    .current_dir(workspace_root())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true);
                let status = tokio::time::timeout(BUILD_WITHIN, command.status()).await;
                match status {
                    Ok(Ok(status)) if status.success() => Ok(image),
                    Ok(Ok(status)) => Err(format!("{} failed: {status}", script.display())),
                    Ok(Err(error)) => Err(format!("{}: {error}", script.display())),
                    Err(_) => Err(format!("{} took over {BUILD_WITHIN:?}", script.display())),
                }
            })
            .await
            .clone()
            .map_err(|reason| SystemError::Command {
                command: "deploy/build-image.sh".into(),
                reason,
            })
    }
}

/// The compose files, given to both kinds of compose as `COMPOSE_FILE`: the deploy file,
/// then any overrides `env` names there (colon-separated paths).
fn with_compose_files(env: &[(String, String)]) -> Vec<(String, String)> {
    let base = workspace_root().join("deploy/docker-compose.yml");
    let mut files = base.to_string_lossy().into_owned();
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len() + 1);
    for (key, value) in env {
        if key == COMPOSE_FILE {
            files = format!("{files}:{value}");
        } else {
            out.push((key.clone(), value.clone()));
        }
    }
    out.push((COMPOSE_FILE.to_string(), files));
    out
}

/// Where compose looks for its files when none is given with `--file`.
pub(crate) const COMPOSE_FILE: &str = "COMPOSE_FILE";

/// The checkout this crate lives in.
pub fn workspace_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        manifest.parent().map_or(manifest.clone(), PathBuf::from)
    })
    .clone()
}

/// Runs a command to completion within `CALL_WITHIN`; its stdout, or why it failed.
async fn call(
    program: &str,
    args: &[&str],
    env: &[(String, String)],
) -> Result<String, SystemError> {
    let output = run(program, args, env, None).await?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(SystemError::Command {
            command: format!("{program} {}", args.join(" ")),
            reason: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Runs a command to completion within `CALL_WITHIN`, `input` on its stdin; what it
/// printed and how it exited, whether that was success or not.
pub(crate) async fn run(
    program: &str,
    args: &[&str],
    env: &[(String, String)],
    input: Option<&[u8]>,
) -> Result<std::process::Output, SystemError> {
    let failed = |reason: String| SystemError::Command {
        command: format!("{program} {}", args.join(" ")),
        reason,
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let finished = async {
        let mut child = command.spawn()?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(input).await?;
            // Dropped: the command sees the end of its input.
        }
        child.wait_with_output().await
    };
    tokio::time::timeout(CALL_WITHIN, finished)
        .await
        .map_err(|_| failed(format!("no answer within {CALL_WITHIN:?}")))?
        .map_err(|e| failed(e.to_string()))
}
