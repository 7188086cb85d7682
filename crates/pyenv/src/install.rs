//! Running an installer step (`uv venv`, `pip install`, ...) with its output
//! streamed line by line to a progress callback, a deadline, and the last lines
//! kept for the error message.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::EnvError;

/// Lines of installer output kept for an error message.
const TAIL_LINES: usize = 25;

/// Runs `cmd` to completion. `step` names it in progress lines and errors.
pub fn run_step(
    step: &str,
    mut cmd: Command,
    cwd: &Path,
    timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<(), EnvError> {
    progress(&format!("{step}: starting"));
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env("PIP_PROGRESS_BAR", "off")
        .env("NO_COLOR", "1")
        .spawn()
        .map_err(|source| EnvError::Spawn { program, source })?;

    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);

    let deadline = Instant::now() + timeout;
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut keep = |line: String, progress: &mut dyn FnMut(&str)| {
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return;
        }
        progress(&format!("{step}: {line}"));
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => keep(line, progress),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both streams closed: the process is ending.
            Err(mpsc::RecvTimeoutError::Disconnected) => match child.wait() {
                Ok(s) => break s,
                Err(source) => {
                    return Err(EnvError::Spawn {
                        program: step.to_string(),
                        source,
                    })
                }
            },
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            for r in readers {
                let _ = r.join();
            }
            while let Ok(line) = rx.try_recv() {
                keep(line, progress);
            }
            return Err(EnvError::Timeout {
                step: step.to_string(),
                seconds: timeout.as_secs(),
                tail: Vec::from(tail).join("\n"),
            });
        }
    };
    for r in readers {
        let _ = r.join();
    }
    if status.success() {
        progress(&format!("{step}: done"));
        Ok(())
    } else {
        Err(EnvError::Install {
            step: step.to_string(),
            status: status.to_string(),
            tail: Vec::from(tail).join("\n"),
        })
    }
}
