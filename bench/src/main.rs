//! `yunzhang-bench`: P1–P3 and P5 of docs/benchmarks.md against the local control plane
//! (`hack/cluster-up` with the `YZ_*` ports of the environment). Run by `hack/bench`, which
//! gives it a cluster of its own; each subcommand writes `<out>/pN.json` and `<out>/pN.md`.

mod common;
mod p1;
mod p2;
mod p3;
mod p5;
mod watch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    /// Timed repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 3, global = true)]
    runs: usize,
    /// Where the reports and the operator's logs go.
    #[arg(long, default_value = "target/bench", global = true)]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Requests to Active, against a minimal client doing the same writes.
    P1 {
        /// Request counts, e.g. 2000,8000.
        #[arg(long, value_delimiter = ',', default_value = "2000")]
        sizes: Vec<usize>,
        /// Creates in flight at a time (and the baseline's requests in flight).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Runs at every size after the first (default: `--runs`).
        #[arg(long)]
        large_runs: Option<usize>,
    },
    /// Approval → next phase latency.
    P2 {
        #[arg(long, default_value_t = 200)]
        approvals: usize,
    },
    /// Operator memory against the JSON size of what it watches.
    P3 {
        /// DEPARTMENTS:REQUESTS pairs, ascending, e.g. 250:12500,1000:50000.
        #[arg(long, value_delimiter = ',', default_value = "1000:50000")]
        sizes: Vec<String>,
    },
    /// Approval → Active with the local OpenTofu executor, against tofu by hand.
    P5,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Start (or reuse) the control plane and install before any client is made.
    tokio::task::spawn_blocking(yunzhang_integration::cluster).await?;
    std::fs::create_dir_all(&cli.out)?;
    match cli.command {
        Command::P1 {
            sizes,
            concurrency,
            large_runs,
        } => {
            p1::run(p1::Args {
                sizes,
                runs: cli.runs,
                large_runs: large_runs.unwrap_or(cli.runs),
                concurrency,
                out: cli.out,
            })
            .await
        }
        Command::P2 { approvals } => {
            p2::run(p2::Args {
                approvals,
                runs: cli.runs,
                out: cli.out,
            })
            .await
        }
        Command::P3 { sizes } => {
            let sizes = sizes
                .iter()
                .map(|s| {
                    let (d, r) = s
                        .split_once(':')
                        .ok_or_else(|| anyhow::anyhow!("{s}: expected DEPARTMENTS:REQUESTS"))?;
                    Ok((d.parse()?, r.parse()?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            p3::run(p3::Args {
                sizes,
                runs: cli.runs,
                out: cli.out,
            })
            .await
        }
        Command::P5 => {
            p5::run(p5::Args {
                runs: cli.runs,
                out: cli.out,
            })
            .await
        }
    }
}
