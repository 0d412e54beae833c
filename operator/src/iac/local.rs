//! The `local` executor: `tofu` as a child process of the operator.
//!
//! Each request gets a working directory `<work_dir>/<namespace>.<name>.<uid>` holding the
//! rendered files, `modules` (a symlink to the configured modules directory, so `./modules/*`
//! sources resolve), `.terraform/` from `tofu init`, and saved plans named by their hash
//! (`plan-<hex>.tfplan`, with `plan-<hex>.workspace` holding the workspace hash it was made
//! for). State is never here: the rendered `kubernetes` backend keeps it in a Secret.
//!
//! Runs of one request are serialized (a lock per request); at most `workers` runs of all
//! requests run at once (a semaphore). Every run has a deadline: on expiry `tofu` gets SIGINT
//! (it stops cleanly and releases the state lock), then SIGKILL after a grace period.
//!
//! Apply never runs anything but the approved plan: it applies `plan-<hex>.tfplan` for the
//! approved hash. When that file is gone (a new pod, a cleaned temp dir, or it was applied
//! already) or OpenTofu finds it stale, it plans afresh: if the fresh plan has the approved
//! hash, it is the same plan and is applied; if it changes nothing, the approved plan is
//! already in effect and apply succeeds without running anything; otherwise it fails and asks
//! for a new plan and approval.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::{
    sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    RenderedWorkspace,
    executor::{
        ApplyOutcome, ExecError, Executor, PlanOutcome, RunContext, split_outputs, summarize_plan,
        tail_chars,
    },
};

/// How `tofu`'s `kubernetes` backend reaches the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeAccess {
    /// In a pod: `KUBE_IN_CLUSTER_CONFIG=true` (the pod's service account).
    InCluster,
    /// `KUBE_CONFIG_PATH=<path>`: the operator's kubeconfig when it runs outside the cluster.
    ConfigPath(PathBuf),
    /// Nothing set: for workspaces without the kubernetes backend.
    Unset,
}

impl KubeAccess {
    /// What the operator itself uses: in a pod (service account token mounted and
    /// `KUBERNETES_SERVICE_HOST` set) the pod's account, else the first file of `KUBECONFIG`,
    /// else `~/.kube/config`.
    pub fn detect() -> Self {
        let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            && Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists();
        if in_pod {
            return KubeAccess::InCluster;
        }
        if let Some(first) = std::env::var_os("KUBECONFIG")
            .as_deref()
            .and_then(|v| std::env::split_paths(v).next())
            .filter(|p| !p.as_os_str().is_empty())
        {
            return KubeAccess::ConfigPath(first);
        }
        match std::env::var_os("HOME") {
            Some(home) => KubeAccess::ConfigPath(Path::new(&home).join(".kube/config")),
            None => KubeAccess::Unset,
        }
    }
}

/// Settings of the local executor.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The `tofu` binary.
    pub tofu: PathBuf,
    /// Root of the per-request working directories (created, mode 0700).
    pub work_dir: PathBuf,
    /// Linked as `modules/` next to `main.tf`, so `./modules/<type>` sources resolve
    /// (`examples/modules` in this repository). `None`: no link (git or registry sources).
    pub modules_dir: Option<PathBuf>,
    /// Runs at once, across all requests.
    pub workers: usize,
    /// Time limit of one run (init, plan or apply, show, output) when the request's provider
    /// sets none.
    pub timeout: Duration,
    /// After SIGINT on timeout, how long `tofu` may take to stop before SIGKILL.
    pub kill_grace: Duration,
    /// Bytes kept of each command's stderr and of readable stdout (the tail).
    pub output_cap: usize,
    /// OpenTofu CLI configuration (`TF_CLI_CONFIG_FILE`), e.g. a `provider_installation`
    /// pointing at a mirror. `None`: an empty file under `work_dir`, which works offline.
    pub cli_config: Option<PathBuf>,
    /// How the `kubernetes` state backend reaches the API server.
    pub kube: KubeAccess,
}

impl LocalConfig {
    /// Defaults: work dir `<temp>/yunzhang-tofu`, no modules dir, 2 workers, 15 minutes, 10 s
    /// grace, 64 KiB of output, an empty CLI configuration, [`KubeAccess::detect`].
    pub fn new(tofu: impl Into<PathBuf>) -> Self {
        LocalConfig {
            tofu: tofu.into(),
            work_dir: std::env::temp_dir().join("yunzhang-tofu"),
            modules_dir: None,
            workers: 2,
            timeout: Duration::from_secs(900),
            kill_grace: Duration::from_secs(10),
            output_cap: 64 * 1024,
            cli_config: None,
            kube: KubeAccess::detect(),
        }
    }
}

/// Command-line options of the local executor, for `yunzhang run` to flatten
/// (`#[command(flatten)] pub tofu: LocalExecutorArgs`).
#[derive(clap::Args, Debug, Clone)]
pub struct LocalExecutorArgs {
    /// The `tofu` binary of the local executor.
    #[arg(long = "tofu", env = "YZ_TOFU", default_value = "tofu")]
    pub tofu: PathBuf,
    /// Root of the local executor's per-request working directories (default:
    /// `<temp>/yunzhang-tofu`). Saved plans live here; keep it on a volume that survives
    /// restarts, or approvals of plans made before a restart need the plan to be re-made
    /// identically.
    #[arg(long = "tofu-work-dir", env = "YZ_TOFU_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Directory linked as `modules/` next to each workspace's `main.tf`, so `./modules/<type>`
    /// sources resolve (e.g. `examples/modules`).
    #[arg(long = "tofu-modules-dir", env = "YZ_TOFU_MODULES_DIR")]
    pub modules_dir: Option<PathBuf>,
    /// OpenTofu runs at once (local executor).
    #[arg(long = "tofu-workers", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Time limit of one run when the CloudProvider sets none, in seconds.
    #[arg(long = "tofu-timeout-seconds", default_value_t = 900)]
    pub timeout_seconds: u64,
    /// OpenTofu CLI configuration, e.g. a provider mirror (default: an empty file).
    #[arg(long = "tofu-cli-config", env = "YZ_TOFU_CLI_CONFIG")]
    pub cli_config: Option<PathBuf>,
}

impl LocalExecutorArgs {
    /// The configuration these options give, with [`KubeAccess::detect`].
    pub fn config(&self) -> LocalConfig {
        let mut config = LocalConfig::new(&self.tofu);
        if let Some(dir) = &self.work_dir {
            config.work_dir = dir.clone();
        }
        config.modules_dir = self.modules_dir.clone();
        config.workers = usize::from(self.workers);
        config.timeout = Duration::from_secs(self.timeout_seconds);
        config.cli_config = self.cli_config.clone();
        config
    }
}

/// Largest `show -json` / `output -json` read; a larger one fails the run rather than being
/// cut (a cut JSON can't be hashed).
const JSON_CAP: usize = 64 * 1024 * 1024;
/// Bytes of stderr quoted in an error message (it ends up in a condition).
const MESSAGE_TAIL: usize = 3000;

/// The `local` executor. Cheap to clone; clones share the pool and the locks.
#[derive(Clone)]
pub struct LocalExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    config: LocalConfig,
    cli_config: PathBuf,
    pool: Arc<Semaphore>,
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl LocalExecutor {
    /// Creates the work dir and, unless configured, the empty CLI configuration.
    pub fn new(mut config: LocalConfig) -> Result<Self, ExecError> {
        // `tofu` runs in each workspace directory: paths it is given must not be relative to
        // the operator's working directory (a relative `--tofu-work-dir` failed every apply).
        config.work_dir = std::path::absolute(&config.work_dir)
            .map_err(|e| io_error("finding", &config.work_dir, e))?;
        create_private_dir(&config.work_dir)?;
        let cli_config = match &config.cli_config {
            Some(path) => path.clone(),
            None => {
                let path = config.work_dir.join("tofu.rc");
                std::fs::write(&path, "").map_err(|e| io_error("writing", &path, e))?;
                path
            }
        };
        Ok(LocalExecutor {
            inner: Arc::new(Inner {
                pool: Arc::new(Semaphore::new(config.workers.max(1))),
                config,
                cli_config,
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The working directory of a request.
    pub fn workspace_dir(&self, ctx: &RunContext) -> PathBuf {
        let r = &ctx.request;
        // Namespace and name are DNS labels and the uid a UUID: no separators, no `..` (and
        // `session` refuses anything else).
        self.inner
            .config
            .work_dir
            .join(format!("{}.{}.{}", r.namespace, r.name, r.uid))
    }

    /// Waits for the request's lock, then for a worker; the deadline starts then.
    async fn session(&self, ctx: &RunContext) -> Result<Session, ExecError> {
        let r = &ctx.request;
        for part in [&r.namespace, &r.name, &r.uid] {
            if part.is_empty() || part.contains('/') || part.contains('\0') || part.starts_with('.')
            {
                return Err(ExecError(format!(
                    "request {}/{} (uid {}) can't name a working directory",
                    r.namespace, r.name, r.uid
                )));
            }
        }
        let dir = self.workspace_dir(ctx);
        let lock = {
            // A poisoned map only means another thread panicked while inserting; the map is
            // still consistent.
            let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(dir.clone()).or_default().clone()
        };
        let request_guard = lock.lock_owned().await;
        let permit = self
            .inner
            .pool
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ExecError("the local executor is shutting down".to_owned()))?;
        let timeout = ctx.timeout.unwrap_or(self.inner.config.timeout);
        Ok(Session {
            inner: self.inner.clone(),
            // Read before this session's first command replaces the pid file.
            dead_run: std::sync::Mutex::new(dead_run(&dir)),
            dir,
            ctx: ctx.clone(),
            deadline: Instant::now() + timeout,
            timeout,
            _request: request_guard,
            _permit: permit,
        })
    }
}

/// One run: holds the request's lock and a worker until dropped.
struct Session {
    inner: Arc<Inner>,
    /// A run of this working directory that died with an earlier operator (see `tofu`).
    dead_run: std::sync::Mutex<Option<u32>>,
    dir: PathBuf,
    ctx: RunContext,
    deadline: Instant,
    timeout: Duration,
    _request: OwnedMutexGuard<()>,
    _permit: OwnedSemaphorePermit,
}

/// A finished `tofu` command.
struct Captured {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Session {
    /// Writes the workspace files (removing `.tf` files it no longer has), links the modules
    /// and runs `tofu init`.
    async fn prepare(&self, workspace: &RenderedWorkspace) -> Result<(), ExecError> {
        create_private_dir(&self.dir)?;
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| io_error("reading", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_config = name.ends_with(".tf") || name.ends_with(".tf.json");
            if is_config && !workspace.files.contains_key(&name) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| io_error("removing", &path, e))?;
            }
        }
        for (name, content) in &workspace.files {
            if name.contains('/') || name.starts_with('.') {
                return Err(ExecError(format!(
                    "the workspace has a file named {name:?}; only plain file names are written"
                )));
            }
            let path = self.dir.join(name);
            std::fs::write(&path, content).map_err(|e| io_error("writing", &path, e))?;
        }
        if let Some(modules) = &self.inner.config.modules_dir {
            let link = self.dir.join("modules");
            if std::fs::symlink_metadata(&link).is_ok() {
                std::fs::remove_file(&link)
                    .or_else(|_| std::fs::remove_dir_all(&link))
                    .map_err(|e| io_error("removing", &link, e))?;
            }
            let target =
                std::path::absolute(modules).map_err(|e| io_error("finding", modules, e))?;
            std::os::unix::fs::symlink(&target, &link)
                .map_err(|e| io_error("linking", &link, e))?;
        }
        let init = self.tofu(&["init", "-input=false", "-no-color"], 0).await?;
        self.check("init", &init, &[0])?;
        Ok(())
    }

    /// `tofu plan` into `pending.tfplan`, summarized; the file is then kept under its hash.
    async fn plan(&self, workspace: &RenderedWorkspace) -> Result<PlanOutcome, ExecError> {
        let pending = "pending.tfplan";
        let plan = self
            .tofu(
                &[
                    "plan",
                    &format!("-out={pending}"),
                    "-input=false",
                    "-no-color",
                    "-detailed-exitcode",
                ],
                0,
            )
            .await?;
        // -detailed-exitcode: 0 no changes, 2 changes, 1 error.
        self.check("plan", &plan, &[0, 2])?;
        let show = self
            .tofu(&["show", "-json", "-no-color", pending], JSON_CAP)
            .await?;
        self.check("show -json", &show, &[0])?;
        let json: Value = serde_json::from_str(&show.stdout)
            .map_err(|e| ExecError(format!("`tofu show -json` printed no valid JSON: {e}")))?;
        let mut outcome = summarize_plan(&workspace.hash, &json)?;
        let readable = self.tofu(&["show", "-no-color", pending], 0).await?;
        self.check("show", &readable, &[0])?;
        outcome.readable = readable.stdout;
        let hex = hash_hex(&outcome.hash)?;
        let (planfile, meta) = self.plan_files(hex);
        std::fs::rename(self.dir.join(pending), &planfile)
            .map_err(|e| io_error("saving the plan as", &planfile, e))?;
        std::fs::write(&meta, &workspace.hash).map_err(|e| io_error("writing", &meta, e))?;
        Ok(outcome)
    }

    fn plan_files(&self, hex: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("plan-{hex}.tfplan")),
            self.dir.join(format!("plan-{hex}.workspace")),
        )
    }

    fn forget_plan(&self, hex: &str) {
        let (planfile, meta) = self.plan_files(hex);
        let _ = std::fs::remove_file(planfile);
        let _ = std::fs::remove_file(meta);
    }

    /// `tofu apply <planfile>`; `Ok(false)` when OpenTofu refuses it as stale.
    async fn apply_saved(&self, planfile: &Path) -> Result<bool, ExecError> {
        let path = planfile.to_string_lossy();
        let apply = self
            .tofu(&["apply", "-input=false", "-no-color", &path], 0)
            .await?;
        if apply.code != Some(0) && apply.stderr.contains("Saved plan is stale") {
            return Ok(false);
        }
        self.check("apply", &apply, &[0])?;
        Ok(true)
    }

    async fn outputs(&self) -> Result<ApplyOutcome, ExecError> {
        let out = self
            .tofu(&["output", "-json", "-no-color"], JSON_CAP)
            .await?;
        self.check("output -json", &out, &[0])?;
        let json: Value = serde_json::from_str(&out.stdout)
            .map_err(|e| ExecError(format!("`tofu output -json` printed no valid JSON: {e}")))?;
        Ok(split_outputs(&json))
    }

    /// The environment of every `tofu` run: nothing inherited but what finding programs,
    /// certificates and proxies needs; the credentials; then ours, which they can't override.
    fn env(&self) -> Vec<(String, String)> {
        let config = &self.inner.config;
        let mut env: BTreeMap<String, String> = [
            "PATH",
            "HOME",
            "TMPDIR",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "NO_PROXY",
            "https_proxy",
            "http_proxy",
            "no_proxy",
        ]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
        .collect();
        env.extend(self.ctx.credentials.env.clone());
        env.entry("HOME".to_owned())
            .or_insert_with(|| config.work_dir.to_string_lossy().into_owned());
        for (k, v) in [
            ("TF_IN_AUTOMATION", "1"),
            ("TF_INPUT", "0"),
            ("CHECKPOINT_DISABLE", "1"),
        ] {
            env.insert(k.to_owned(), v.to_owned());
        }
        env.insert(
            "TF_CLI_CONFIG_FILE".to_owned(),
            self.inner.cli_config.to_string_lossy().into_owned(),
        );
        env.remove("TF_LOG");
        match &config.kube {
            KubeAccess::InCluster => {
                env.insert("KUBE_IN_CLUSTER_CONFIG".to_owned(), "true".to_owned());
            }
            KubeAccess::ConfigPath(path) => {
                env.insert(
                    "KUBE_CONFIG_PATH".to_owned(),
                    path.to_string_lossy().into_owned(),
                );
            }
            KubeAccess::Unset => {}
        }
        env.into_iter().collect()
    }

    /// Runs `tofu args…` in the working directory until done or the deadline. Keeps the last
    /// `stdout_cap` bytes of stdout (0: the configured output cap; a JSON read gets
    /// [`JSON_CAP`] and fails if cut) and the last output cap of stderr.
    async fn tofu(&self, args: &[&str], stdout_cap: usize) -> Result<Captured, ExecError> {
        // A run of this working directory that died with the operator (SIGKILL, a crash) left
        // its pid behind, and may have left the state locked: once that process is gone, its
        // lock is stale and is released, and the command is run again, once.
        let run = self.tofu_once(args, stdout_cap).await?;
        let locked = run.code != Some(0) && run.stderr.contains("Error acquiring the state lock");
        let stale = if locked {
            self.dead_run
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        } else {
            None
        };
        if let (Some(pid), Some(id)) = (stale, lock_id(&run.stderr)) {
            warn!(dir = %self.dir.display(), pid, lock = id, "releasing the state lock of a tofu run that died with the operator");
            let unlock = self.tofu_once(&["force-unlock", "-force", id], 0).await?;
            self.check("force-unlock", &unlock, &[0])?;
            return self.tofu_once(args, stdout_cap).await;
        }
        Ok(run)
    }
}

/// The pid of the last tofu run in working directory `dir`, if it never finished under an
/// operator's watch and is no longer running.
fn dead_run(dir: &Path) -> Option<u32> {
    {
        let pid: u32 = std::fs::read_to_string(dir.join(PIDFILE))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let running = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("tofu"));
        (!running).then_some(pid)
    }
}

impl Session {
    async fn tofu_once(&self, args: &[&str], stdout_cap: usize) -> Result<Captured, ExecError> {
        let config = &self.inner.config;
        let json = stdout_cap != 0;
        let stdout_cap = if json { stdout_cap } else { config.output_cap };
        debug!(dir = %self.dir.display(), ?args, "tofu");
        // Output goes to files, not pipes: if the operator dies mid-run, tofu doesn't die of a
        // broken pipe halfway through an apply; it finishes, writes its state and releases
        // the lock, and the next operator finds the work done (never applied twice).
        let out_path = self.dir.join(".tofu.stdout");
        let err_path = self.dir.join(".tofu.stderr");
        let open =
            |path: &Path| std::fs::File::create(path).map_err(|e| io_error("creating", path, e));
        let (out_file, err_file) = (open(&out_path)?, open(&err_path)?);
        let mut command = tokio::process::Command::new(&config.tofu);
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires. An operator started with
        // SIGINT ignored (nohup, a background job of a shell) would pass that on, and tofu
        // could then not be interrupted (`Interrupt`): its child gets the default back.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command
            .args(args)
            .current_dir(&self.dir)
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_file))
            .stderr(Stdio::from(err_file))
            // Not killed when dropped: see `Interrupt` below.
            .kill_on_drop(false)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ExecError(format!(
                    "could not start {}: {e}; check the executor's tofu path",
                    config.tofu.display()
                ))
            })?;
        let pidfile = self.dir.join(PIDFILE);
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&pidfile, pid.to_string());
        }
        // If this future is dropped mid-run (the caller gave up), tofu gets SIGINT rather than
        // SIGKILL: it stops at a safe point and releases the state lock; tokio reaps it.
        let mut interrupt_on_drop = Interrupt(child.id());
        let waited = tokio::time::timeout_at(self.deadline, child.wait()).await;
        let status = match waited {
            Ok(status) => Some(status.map_err(|e| ExecError(format!("waiting for tofu: {e}")))?),
            Err(_) => {
                // Past the deadline. tofu leads its own process group (with its providers):
                // SIGINT, as Ctrl-C would, lets it stop cleanly and release the state lock;
                // SIGKILL to the group if it takes longer than the grace period.
                if let Some(pid) = child.id() {
                    signal_group(pid, libc::SIGINT);
                    if tokio::time::timeout(config.kill_grace, child.wait())
                        .await
                        .is_err()
                    {
                        signal_group(pid, libc::SIGKILL);
                    }
                }
                let _ = child.kill().await;
                None
            }
        };
        interrupt_on_drop.0 = None;
        let _ = std::fs::remove_file(&pidfile);
        let (out, out_cut) = read_tail(&out_path, stdout_cap);
        let (err, _) = read_tail(&err_path, config.output_cap);
        let stderr = self.ctx.credentials.redact(&String::from_utf8_lossy(&err));
        let Some(status) = status else {
            return Err(ExecError(format!(
                "tofu {} did not finish within the run's time limit of {}s and was stopped; \
                 raise spec.executor.timeoutSeconds of the CloudProvider, or check what it \
                 waits for (a state lock, the cloud's API). Its last output:\n{}",
                args.first().copied().unwrap_or_default(),
                self.timeout.as_secs(),
                tail_chars(&stderr, MESSAGE_TAIL)
            )));
        };
        if json && out_cut {
            return Err(ExecError(format!(
                "tofu {} printed more than {JSON_CAP} bytes",
                args.join(" ")
            )));
        }
        Ok(Captured {
            code: status.code(),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr,
        })
    }

    /// An error unless the command exited with one of `ok`; the message quotes stderr's tail
    /// and says what to check.
    fn check(&self, what: &str, run: &Captured, ok: &[i32]) -> Result<(), ExecError> {
        if run.code.is_some_and(|c| ok.contains(&c)) {
            return Ok(());
        }
        let code = run
            .code
            .map_or_else(|| "a signal".to_owned(), |c| format!("exit {c}"));
        Err(ExecError(format!(
            "tofu {what} failed ({code}) in {}: {}\n{}",
            self.dir.display(),
            hint(&run.stderr),
            tail_chars(&run.stderr, MESSAGE_TAIL)
        )))
    }
}

/// What to check, for the errors we know.
/// Where a working directory records the pid of its running tofu.
const PIDFILE: &str = ".tofu.pid";

/// The lock ID in OpenTofu's "Error acquiring the state lock" message.
fn lock_id(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("ID:"))
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
}

fn hint(stderr: &str) -> &'static str {
    let has = |s: &str| stderr.contains(s);
    if has("Error acquiring the state lock") {
        "another run holds the state lock (a Lease `lock-tfstate-default-<suffix>` in the state \
         namespace). If no run is active (e.g. the operator was killed mid-run), remove the lock \
         with `tofu force-unlock <ID>` in the working directory"
    } else if has("Saved plan is stale") {
        "the state changed since the plan was made: make a new plan and have it approved"
    } else if has("Failed to query available provider packages")
        || has("Failed to install provider")
        || has("Failed to load plugin schemas")
    {
        "a provider could not be installed: without network access, point the CLI \
         configuration's provider_installation at a mirror (the executor's cli config)"
    } else if has("Module not installed")
        || has("Unreadable module directory")
        || has("Failed to download module")
    {
        "a module source did not resolve: local sources (./modules/…) need the executor's \
         modules directory, git and registry sources need network access"
    } else if has("Forbidden") || has("Unauthorized") || has("forbidden") {
        "the kubernetes state backend was refused: the operator's identity needs get, create, \
         update, delete on secrets and leases (coordination.k8s.io) in the state namespace"
    } else if has("Invalid value for variable") || has("validation rule") {
        "a module refused a value: see its message below"
    } else {
        "see OpenTofu's message below"
    }
}

impl Executor for LocalExecutor {
    fn plan(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<PlanOutcome, ExecError>> {
        let this = self.clone();
        Box::pin(async move {
            let session = this.session(&ctx).await?;
            session.prepare(&workspace).await?;
            let outcome = session.plan(&workspace).await?;
            info!(
                request = %format!("{}/{}", ctx.request.namespace, ctx.request.name),
                hash = %outcome.hash, add = outcome.add, change = outcome.change,
                destroy = outcome.destroy, "planned"
            );
            Ok(outcome)
        })
    }

    fn apply(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
        plan_hash: String,
    ) -> BoxFuture<'static, Result<ApplyOutcome, ExecError>> {
        let this = self.clone();
        Box::pin(async move {
            let hex = hash_hex(&plan_hash)?.to_owned();
            let session = this.session(&ctx).await?;
            session.prepare(&workspace).await?;
            let request = format!("{}/{}", ctx.request.namespace, ctx.request.name);
            let (planfile, meta) = session.plan_files(&hex);
            if let Ok(planned_for) = std::fs::read_to_string(&meta)
                && planned_for != workspace.hash
            {
                return Err(ExecError(format!(
                    "plan {plan_hash} was made for workspace {planned_for}, not for the \
                     workspace given ({}); apply the workspace that was planned and approved",
                    workspace.hash
                )));
            }
            if planfile.exists() {
                if session.apply_saved(&planfile).await? {
                    session.forget_plan(&hex);
                    info!(%request, hash = %plan_hash, "applied the saved plan");
                    return session.outputs().await;
                }
                info!(%request, hash = %plan_hash, "saved plan is stale; checking what is in effect");
                session.forget_plan(&hex);
            }
            // No saved plan (applied already, or a new working directory), or a stale one.
            let fresh = session.plan(&workspace).await?;
            let fresh_hex = hash_hex(&fresh.hash)?.to_owned();
            if fresh.hash == plan_hash {
                // The same changes against the same state: exactly what was approved.
                let (fresh_file, _) = session.plan_files(&fresh_hex);
                if session.apply_saved(&fresh_file).await? {
                    session.forget_plan(&fresh_hex);
                    info!(%request, hash = %plan_hash, "applied the approved plan, re-made");
                    return session.outputs().await;
                }
            }
            session.forget_plan(&fresh_hex);
            if fresh.is_empty() {
                info!(%request, hash = %plan_hash, "already applied; nothing to do");
                return session.outputs().await;
            }
            Err(ExecError(format!(
                "plan {plan_hash} can no longer be applied: its saved plan is gone or stale (the \
                 state changed since it was made, or the working directory was lost) and the \
                 infrastructure does not match the workspace ({} to add, {} to change, {} to \
                 destroy). Nothing was applied. Make a new plan and have it approved again.",
                fresh.add, fresh.change, fresh.destroy
            )))
        })
    }

    fn destroy(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<(), ExecError>> {
        let this = self.clone();
        Box::pin(async move {
            let session = this.session(&ctx).await?;
            session.prepare(&workspace).await?;
            let run = session
                .tofu(
                    &["destroy", "-auto-approve", "-input=false", "-no-color"],
                    0,
                )
                .await?;
            session.check("destroy", &run, &[0])?;
            // State (now empty) stays in its Secret; the working directory is not needed.
            let _ = std::fs::remove_dir_all(&session.dir);
            info!(request = %format!("{}/{}", ctx.request.namespace, ctx.request.name), "destroyed");
            Ok(())
        })
    }

    fn drift(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<Option<PlanOutcome>, ExecError>> {
        let this = self.clone();
        Box::pin(async move {
            let session = this.session(&ctx).await?;
            session.prepare(&workspace).await?;
            let outcome = session.plan(&workspace).await?;
            if outcome.is_empty() {
                session.forget_plan(hash_hex(&outcome.hash)?);
                return Ok(None);
            }
            Ok(Some(outcome))
        })
    }
}

/// The hex of a `sha256:<64 hex>` plan hash; anything else is refused (it names a file).
fn hash_hex(hash: &str) -> Result<&str, ExecError> {
    hash.strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ExecError(format!("{hash:?} is not a plan hash (sha256:<64 hex>)")))
}

/// Reads `reader` to the end, keeping the last `cap` bytes; `true` when some were dropped.
/// The last `cap` bytes of a run's output file, and whether anything was cut.
fn read_tail(path: &Path, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = std::fs::read(path).unwrap_or_default();
    let cut = kept.len() > cap;
    if cut {
        kept.drain(..kept.len() - cap);
    }
    (kept, cut)
}

/// Interrupts the process group of a running `tofu` when dropped, unless disarmed (`.0 = None`).
struct Interrupt(Option<u32>);

impl Drop for Interrupt {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal_group(pid, libc::SIGINT);
        }
    }
}

/// Sends `signal` to the process group led by our child `pid`.
fn signal_group(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory effects. The group is the one our child leads
        // (`process_group(0)`); it has not been waited for yet, so its id has not been reused.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ExecError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("creating", dir, e))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ExecError {
    ExecError(format!(
        "{what} {}: {e}; check the executor's work dir (--tofu-work-dir) is writable",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `tofu`: a shell script with `body`, in a fresh directory (`{root}` in `body` is
    /// replaced by that directory), and a config using it, a run context and a workspace.
    fn fake_tofu(name: &str, body: &str) -> (PathBuf, LocalConfig, RunContext, RenderedWorkspace) {
        let root = std::env::temp_dir().join(format!("yz-local-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("temp dir");
        let fake = root.join("tofu");
        let script = format!(
            "#!/bin/sh\n{}",
            body.replace("{root}", &root.to_string_lossy())
        );
        std::fs::write(&fake, script).expect("fake tofu");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let mut config = LocalConfig::new(&fake);
        config.work_dir = root.join("work");
        config.kube = KubeAccess::Unset;
        let ctx = RunContext::new(super::super::RequestRef {
            namespace: "ns".to_owned(),
            name: "req".to_owned(),
            uid: "uid".to_owned(),
        });
        let ws = RenderedWorkspace {
            files: [("main.tf".to_owned(), String::new())].into(),
            hash: "sha256:x".to_owned(),
        };
        (root, config, ctx, ws)
    }

    #[test]
    fn output_keeps_the_tail_within_the_cap() {
        let dir = std::env::temp_dir().join(format!("yz-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (long, short) = (dir.join("long"), dir.join("short"));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&long, &data).unwrap();
        std::fs::write(&short, b"short").unwrap();
        let (kept, cut) = read_tail(&long, 1000);
        assert!(cut);
        assert_eq!(kept, data[data.len() - 1000..]);
        let (kept, cut) = read_tail(&short, 1000);
        assert_eq!((kept.as_slice(), cut), (&b"short"[..], false));
        assert_eq!(read_tail(&dir.join("missing"), 10), (Vec::new(), false));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A run past its time limit is stopped, with the processes it started, and says so.
    #[tokio::test]
    async fn a_run_past_its_deadline_is_stopped() {
        // A "tofu" that ignores SIGINT and starts a grandchild holding stderr.
        let (root, mut config, mut ctx, ws) = fake_tofu(
            "timeout",
            "trap '' INT\necho started >&2\nsleep 60 &\necho $! > {root}/pids\nsleep 60\n",
        );
        let pids = root.join("pids");
        config.kill_grace = Duration::from_millis(200);
        let executor = LocalExecutor::new(config).expect("executor");
        ctx.timeout = Some(Duration::from_millis(500));
        let err = executor.plan(ctx, ws).await.expect_err("times out");
        assert!(err.0.contains("time limit"), "{err}");
        assert!(err.0.contains("timeoutSeconds"), "{err}");
        // The grandchild went with the group: gone, or a zombie waiting to be reaped.
        // (SIGKILL is delivered at once but takes effect asynchronously: allow it a moment.)
        let pid = std::fs::read_to_string(&pids).expect("pid file");
        let gone =
            |stat: &std::io::Result<String>| stat.as_ref().map_or(true, |s| s.contains(") Z "));
        let mut stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        for _ in 0..40 {
            if gone(&stat) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        }
        assert!(
            stat.as_deref().map_or(true, |s| s.contains(") Z ")),
            "the background sleep still runs: {stat:?}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A run whose future is dropped (the caller gave up) interrupts tofu, as Ctrl-C would,
    /// so it can release the state lock, instead of killing it.
    #[tokio::test]
    async fn dropping_a_run_interrupts_tofu() {
        let (root, config, ctx, ws) = fake_tofu(
            "drop",
            "trap 'touch {root}/interrupted; exit 130' INT\ntouch {root}/started\n\
             while :; do sleep 0.1; done\n",
        );
        let (started, interrupted) = (root.join("started"), root.join("interrupted"));
        let executor = LocalExecutor::new(config).expect("executor");
        let run = tokio::spawn(executor.plan(ctx, ws));
        while !started.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run.abort();
        let _ = run.await;
        // A guard against hanging, not a measurement.
        tokio::time::timeout(Duration::from_secs(60), async {
            while !interrupted.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("tofu was interrupted");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// tofu's environment: ours, the backend's access, the credentials; and the credentials'
    /// values never in the error that quotes tofu's output.
    #[tokio::test]
    async fn tofu_gets_its_environment_and_errors_hide_credentials() {
        let (root, mut config, mut ctx, ws) = fake_tofu(
            "env",
            "env > {root}/env\necho \"Error: auth failed for $OS_PASSWORD\" >&2\nexit 1\n",
        );
        let env_file = root.join("env");
        config.kube = KubeAccess::ConfigPath(PathBuf::from("/etc/yunzhang/kubeconfig"));
        let executor = LocalExecutor::new(config).expect("executor");
        ctx.credentials.env = [("OS_PASSWORD".to_owned(), "s3cret-value".to_owned())].into();
        let err = executor.plan(ctx, ws).await.expect_err("init fails");
        assert!(err.0.contains("tofu init failed (exit 1)"), "{err}");
        assert!(err.0.contains("auth failed for ***"), "{err}");
        assert!(!err.0.contains("s3cret-value"), "{err}");
        let env = std::fs::read_to_string(&env_file).expect("env");
        let cli_config = root.join("work/tofu.rc");
        for line in [
            "TF_IN_AUTOMATION=1".to_owned(),
            "TF_INPUT=0".to_owned(),
            "KUBE_CONFIG_PATH=/etc/yunzhang/kubeconfig".to_owned(),
            format!("TF_CLI_CONFIG_FILE={}", cli_config.display()),
            "OS_PASSWORD=s3cret-value".to_owned(),
        ] {
            assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
        }
        assert!(!env.contains("KUBE_IN_CLUSTER_CONFIG"), "{env}");
        assert_eq!(std::fs::read_to_string(cli_config).expect("cli config"), "");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn plan_hashes_must_be_sha256_hex_so_they_can_name_files() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(hash_hex(&good), Ok("ab".repeat(32).as_str()));
        for bad in [
            "sha256:../../etc/passwd",
            "ab",
            "sha256:",
            &format!("md5:{}", "ab".repeat(32)),
        ] {
            assert!(hash_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_line_options_give_the_config() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            tofu: LocalExecutorArgs,
        }
        let cli = Cli::try_parse_from([
            "yunzhang",
            "--tofu",
            "/opt/tofu/bin/tofu",
            "--tofu-workers",
            "4",
            "--tofu-modules-dir",
            "examples/modules",
            "--tofu-work-dir",
            "/var/lib/yunzhang/tofu",
        ])
        .expect("parses");
        let config = cli.tofu.config();
        assert_eq!(config.tofu, PathBuf::from("/opt/tofu/bin/tofu"));
        assert_eq!(config.workers, 4);
        assert_eq!(config.modules_dir, Some(PathBuf::from("examples/modules")));
        assert_eq!(config.work_dir, PathBuf::from("/var/lib/yunzhang/tofu"));
        assert_eq!(config.timeout, Duration::from_secs(900));
    }

    #[test]
    fn the_lock_id_is_read_from_the_lock_error() {
        let stderr = "Error: Error acquiring the state lock\n\nLock Info:\n  ID:        58a4fa4a-6e37-a9d3-91fe-2585761228af\n  Path:      \n";
        assert_eq!(
            lock_id(stderr),
            Some("58a4fa4a-6e37-a9d3-91fe-2585761228af")
        );
        assert_eq!(lock_id("ID: $(rm -rf /)"), None);
        assert_eq!(lock_id("no lock here"), None);
    }

    #[test]
    fn known_failures_say_what_to_check() {
        assert!(hint("Error: Error acquiring the state lock").contains("force-unlock"));
        assert!(hint("Error: Failed to query available provider packages").contains("mirror"));
        assert!(hint("something else").contains("below"));
        assert_eq!(tail_chars("广西政务云", 4), "云");
    }
}
