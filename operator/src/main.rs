use std::path::PathBuf;

use clap::{Parser, Subcommand};
use yunzhang::cli::plugin;

/// yunzhang (云长): the government one-cloud resource lifecycle as a Kubernetes operator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Start the business clock (quota windows, metering, budgets, cutover windows, settlement)
    /// at this RFC 3339 instant instead of the system time; it runs on at real speed. For tests
    /// and rehearsals of another day, e.g. `2027-01-15T09:00:00+08:00`.
    #[arg(long, global = true, env = "YZ_CLOCK", value_parser = yunzhang::clock::parse_instant)]
    clock: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CRDs, or write one YAML file per kind into directories.
    Crd {
        /// Write one file per kind into this directory (may be given more than once).
        #[arg(long = "out-dir")]
        out_dirs: Vec<PathBuf>,
        /// Exit non-zero if the files in --out-dir differ from what would be written.
        #[arg(long, requires = "out_dirs")]
        check: bool,
    },
    /// Run the operator.
    Run(Box<yunzhang::run::RunArgs>),
    /// Reports: `report settlement --period 2026-10 --format csv|json|xlsx`, and
    /// `report scorecard --quarter 2026-Q4 --format csv|json`.
    #[command(subcommand)]
    Report(yunzhang::cli::report::ReportCommand),
    /// The kubectl plugin verbs (also `kubectl yunzhang VERB` when installed as kubectl-yunzhang).
    #[command(flatten)]
    Plugin(plugin::PluginCommand),
}

fn main() -> anyhow::Result<()> {
    // Installed or symlinked as `kubectl-yunzhang`, kubectl runs us as its plugin.
    if std::env::args_os()
        .next()
        .is_some_and(|argv0| plugin::invoked_as_plugin(&argv0))
    {
        std::process::exit(plugin::main(plugin::PluginCli::parse().command));
    }
    let cli = Cli::parse();
    if let Some(at) = cli.clock {
        yunzhang::clock::start_at(at);
    }
    match cli.command {
        Command::Crd { out_dirs, check } => {
            if out_dirs.is_empty() {
                yunzhang::cli::crd::print()
            } else if check {
                let drift = yunzhang::cli::crd::check(&out_dirs)?;
                if drift.is_empty() {
                    Ok(())
                } else {
                    anyhow::bail!(
                        "CRDs out of date (run `make crds` and commit the result): {}",
                        drift.join(", ")
                    )
                }
            } else {
                yunzhang::cli::crd::write(&out_dirs)
            }
        }
        Command::Run(args) => yunzhang::run::main(*args),
        Command::Report(command) => std::process::exit(yunzhang::cli::report::main(command)),
        Command::Plugin(command) => std::process::exit(plugin::main(command)),
    }
}
