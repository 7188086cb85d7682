//! The supervisor's vocabulary: ids, specs, lifecycle states, the inputs the
//! state machine is told, the effects it asks for, and the views the API shows.
//! Everything else depends on it; it depends on nothing of the supervisor's.

pub mod effect;
pub mod event;
pub mod failure;
pub mod id;
pub mod lifecycle;
pub mod report;
pub mod settings;
pub mod spec;
pub mod view;

pub use effect::{
    Answer, CommandError, Effect, ErrorKind, Launch, Level, LogRecord, MetricEvent, PutOutcome,
    Reply, Signal,
};
pub use event::{
    Clock, Command, ExitInfo, FetchFailure, Health, Input, Origin, Resolved, SpawnFailure, Timer,
    WorkerEvent,
};
pub use failure::FailureClass;
pub use id::{AgentId, FetchId, WaiterId, WorkerId};
pub use lifecycle::State;
pub use report::{ReconcileFailure, ReconcileReport};
pub use settings::AgentSettings;
pub use spec::{AgentSpec, RestartPolicy, SessionMode, SessionSettings};
pub use view::{
    AgentView, AutoscaleView, DrainingView, Enforcement, LimitSource, Limits, PackageRecord,
    ProcessView, RolloutPhase, RolloutStatus, RolloutStrategy, RolloutView,
};
