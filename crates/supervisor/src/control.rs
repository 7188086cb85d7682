//! The handle the HTTP side and the runtime tasks hold: send commands to the
//! state machine and wait for their answers, send it events, and read what it
//! publishes (the process snapshot and the supervisor's phase) — told of
//! changes, never polling.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::model::{Command, CommandError, Input, ProcessView, Reply};

/// What the dispatcher receives.
#[derive(Debug)]
pub enum Message {
    Command {
        command: Command,
        reply: oneshot::Sender<Reply>,
    },
    Input(Input),
}

/// The supervisor as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Running,
    Draining,
    Stopped,
}

/// The processes as of the last change.
pub type Snapshot = Arc<Vec<ProcessView>>;
/// The agents as wholes as of the last change, and the handles of the live
/// counters (workers, pools) the API shows them with.
pub type Agents = Arc<crate::http::api::view::Published>;

#[derive(Clone)]
pub struct Control {
    tx: mpsc::UnboundedSender<Message>,
    snapshot: watch::Receiver<Snapshot>,
    agents: watch::Receiver<Agents>,
    phase: watch::Receiver<Phase>,
}

/// The dispatcher's ends of the channels a [`Control`] talks through.
pub struct Channels {
    pub rx: mpsc::UnboundedReceiver<Message>,
    pub snapshot: watch::Sender<Snapshot>,
    pub agents: watch::Sender<Agents>,
    pub phase: watch::Sender<Phase>,
}

impl Control {
    pub fn new() -> (Control, Channels) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(Vec::new()));
        let (agents_tx, agents) = watch::channel(Arc::default());
        let (phase_tx, phase) = watch::channel(Phase::Starting);
        (
            Control {
                tx,
                snapshot,
                agents,
                phase,
            },
            Channels {
                rx,
                snapshot: snapshot_tx,
                agents: agents_tx,
                phase: phase_tx,
            },
        )
    }

    /// Sends a command and waits for its answer.
    pub async fn ask(&self, command: Command) -> Reply {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Message::Command { command, reply })
            .map_err(|_| CommandError::shutting_down())?;
        rx.await.map_err(|_| CommandError::shutting_down())?
    }

    /// Tells the state machine of an event; false once it has stopped.
    pub fn send(&self, input: Input) -> bool {
        self.tx.send(Message::Input(input)).is_ok()
    }

    pub fn processes(&self) -> Snapshot {
        Arc::clone(&self.snapshot.borrow())
    }

    pub fn agents(&self) -> Agents {
        Arc::clone(&self.agents.borrow())
    }

    /// A receiver of every new snapshot.
    pub fn watch_processes(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Completes once the phase satisfies `f` (at once if it does already).
    pub async fn wait_phase(&self, f: impl Fn(Phase) -> bool) {
        let mut rx = self.phase.clone();
        let _ = rx.wait_for(|p| f(*p)).await;
    }
}
