//! The `yunzhang` command line: `run`, `crd`, the kubectl plugin verbs (`approve`, `reject`,
//! `retire`, `status`), `report` (settlement exports), and (later) `audit`.

pub mod crd;
pub mod plugin;
pub mod report;

/// Run one command's future on a small runtime: `Ok` → exit code 0; `Err` → `error: …` (what
/// went wrong and what to do) on stderr and exit code 1.
pub fn exit_code(command: impl std::future::Future<Output = anyhow::Result<()>>) -> i32 {
    crate::run::install_crypto_provider();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(command));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
