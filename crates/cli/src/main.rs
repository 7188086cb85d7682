//! `par`: one binary, several modes (supervisor, worker, run, pack, inspect, ctl).
//! Thin on purpose: parse, dispatch, print the error chain, map to an exit code.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "par", version, about = "Pixell Agent Runtime")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Multi-PAR supervisor (the container's command).
    Supervisor(par_supervisor::cli::SupervisorArgs),
    /// Serve one agent package on one port (spawned by the supervisor).
    Worker(par_worker::cli::WorkerArgs),
    /// Run one agent in the foreground, without a supervisor.
    Run(par_worker::cli::RunArgs),
    /// Build an APKG from a source folder.
    Pack(commands::pack::PackArgs),
    /// Print an APKG's manifest and surfaces.
    Inspect(commands::inspect::InspectArgs),
    /// Control a running supervisor (ls, logs, restart, rollout, top...).
    Ctl(commands::ctl::CtlArgs),
    /// Build a package's Python environment (run by the supervisor).
    #[command(hide = true)]
    InstallEnv(par_worker::cli::InstallEnvArgs),
    /// What a folder holds on disk (run by the supervisor's disk watchdog).
    #[command(hide = true)]
    DiskUsage(par_worker::cli::DiskUsageArgs),
}

fn main() {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        // `PAR_MODE=supervisor par` / `PAR_MODE=worker par` (the container's way).
        None => match std::env::var("PAR_MODE").as_deref() {
            Ok("supervisor") => Command::Supervisor(parse_mode_args("supervisor")),
            Ok("worker") => Command::Worker(parse_mode_args("worker")),
            Ok(other) => fail(anyhow::anyhow!(
                "PAR_MODE={other:?} is not a mode; use supervisor or worker"
            )),
            Err(_) => {
                use clap::CommandFactory;
                let _ = Cli::command().print_help();
                std::process::exit(2);
            }
        },
    };
    let result = match command {
        Command::Supervisor(a) => par_supervisor::cli::run(a),
        Command::Worker(a) => par_worker::cli::run_worker(a),
        Command::Run(a) => par_worker::cli::run_single(a),
        Command::Pack(a) => commands::pack::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Ctl(a) => commands::ctl::run(a),
        Command::InstallEnv(a) => par_worker::cli::run_install_env(a),
        Command::DiskUsage(a) => par_worker::cli::run_disk_usage(a),
    };
    if let Err(e) = result {
        fail(e)
    }
}

/// Parses the environment-only form of a mode (`PAR_MODE=...` with no subcommand).
fn parse_mode_args<T: clap::FromArgMatches + clap::Args>(mode: &'static str) -> T {
    let cmd = T::augment_args(clap::Command::new(mode));
    let matches = cmd.get_matches_from([mode]);
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn fail(e: anyhow::Error) -> ! {
    eprintln!("par: error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    // `par ctl` documents its exit codes; everything else fails with 1.
    let code = e
        .downcast_ref::<commands::ctl::CtlError>()
        .map_or(1, commands::ctl::CtlError::exit_code);
    std::process::exit(code)
}
