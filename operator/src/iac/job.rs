//! The `job` executor: one Kubernetes Job per OpenTofu run.
//!
//! For a run the operator creates, in the run namespace (the request's own, or a dedicated
//! executor namespace):
//!
//! 1. the Job `<run>`: the provider's image and service account, a non-root read-only
//!    container running a fixed `sh` script ([`SCRIPT`]), the workspace mounted read-only,
//!    `activeDeadlineSeconds` from the timeout, `backoffLimit: 0`;
//! 2. a result Secret `<run>-result`, empty, which the pod fills (a Secret because plans and
//!    outputs may hold sensitive values);
//! 3. a workspace ConfigMap `<run>-workspace` holding the rendered files.
//!
//! The pod reports by JSON merge patches of the result Secret through the API server (`curl`
//! with its service account token): `exit-code`, `log` (the tail), and as far as the run got
//! `plan.json`, `plan.txt`, `outputs.json`. The operator polls the Secret until `exit-code` is
//! there, the Job has failed, or the timeout; it computes the plan's hash and counts from
//! `plan.json` exactly as the local executor does.
//!
//! Apply can't carry a saved plan file from the plan Job, so an apply Job plans afresh and
//! reports the plan; the operator answers `decision: apply` only if that plan has the approved
//! hash (same workspace, same changes against the same state: exactly what was approved), and
//! `stop` otherwise; the pod applies its saved plan or nothing. An empty fresh plan means the
//! approved plan is in effect already (a repeated apply after a restart): success, nothing
//! applied.
//!
//! When the run namespace is the request's, all three objects are owned by the request
//! (deleted with it); otherwise owner references can't cross namespaces, so the Secret and
//! ConfigMap are owned by the Job, which is labelled with the request and removed by its TTL.
//!
//! The pod's service account needs `get, patch` on secrets in the run namespace (its result),
//! and for the kubernetes state backend `get, list, create, update, delete` on secrets and
//! `get, list, create, update, delete` on leases (coordination.k8s.io) in the state namespace.
//! See `docs/iac.md`.

use std::{collections::BTreeMap, time::Duration};

use futures::future::BoxFuture;
use k8s_openapi::{
    ByteString,
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
            EnvFromSource, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
            ResourceRequirements, SeccompProfile, Secret, SecretEnvSource, SecurityContext, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::OwnerReference},
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::Value;
use tracing::info;

use super::{
    RenderedWorkspace,
    executor::{
        ApplyOutcome, ExecError, Executor, PlanOutcome, RunContext, split_outputs, summarize_plan,
        tail_chars,
    },
};
use crate::api::ResourceRequest;

/// Label: which kind of run (`plan`, `destroy`).
pub const RUN_LABEL: &str = "yunzhang.io/run";
/// Label: the request's uid.
pub const REQUEST_UID_LABEL: &str = "yunzhang.io/request-uid";
/// Label: the request's namespace.
pub const REQUEST_NAMESPACE_LABEL: &str = "yunzhang.io/request-namespace";
/// Label: the request's name.
pub const REQUEST_NAME_LABEL: &str = "yunzhang.io/request-name";

/// Where the workspace ConfigMap is mounted (read-only).
pub const WORKSPACE_MOUNT: &str = "/workspace";
/// The writable working directory (an emptyDir), also `HOME`.
pub const WORK_MOUNT: &str = "/work";
/// The uid and gid the pod runs as.
pub const RUN_AS: i64 = 65532;

/// Settings of the job executor, one per `CloudProvider`.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    /// Namespace of the Jobs and their ConfigMaps; `None`: the request's namespace (objects
    /// owned by the request).
    pub namespace: Option<String>,
    /// `spec.executor.image`: an image with `tofu`, `sh`, `base64`, `tail` and `curl`.
    pub image: String,
    /// `spec.executor.serviceAccount`; `None`: the namespace's `default`.
    pub service_account: Option<String>,
    /// `spec.executor.timeoutSeconds` (default 900): `activeDeadlineSeconds` of each Job.
    pub timeout: Duration,
    /// Requests and limits of the OpenTofu container.
    pub resources: ResourceRequirements,
    /// A directory in the image linked as `modules/` next to `main.tf` (for `./modules/…`
    /// sources); `None` for git and registry sources.
    pub modules_path: Option<String>,
    /// `TF_CLI_CONFIG_FILE` in the image (e.g. a provider mirror); `None`: an empty file.
    pub cli_config_path: Option<String>,
    /// Finished Jobs (and the ConfigMaps they own) are removed after this long.
    pub ttl_after_finished: Duration,
    /// How often the result Secret is read while waiting.
    pub poll_interval: Duration,
}

impl JobConfig {
    /// From a provider's `spec.executor`; fails without an image.
    pub fn from_spec(executor: &crate::api::cloud_provider::Executor) -> Result<Self, ExecError> {
        let image = executor.image.clone().ok_or_else(|| {
            ExecError("the job executor needs spec.executor.image on the CloudProvider".to_owned())
        })?;
        Ok(JobConfig {
            service_account: executor.service_account.clone(),
            timeout: Duration::from_secs(u64::from(executor.timeout_seconds.unwrap_or(900))),
            ..JobConfig::new(image)
        })
    }

    /// Defaults: the request's namespace, the `default` service account, 15 minutes,
    /// requests 250m CPU / 256Mi, limits 1 CPU / 1Gi, no modules, an hour's TTL.
    pub fn new(image: impl Into<String>) -> Self {
        let quantities = |cpu: &str, memory: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity(memory.to_owned())),
            ])
        };
        JobConfig {
            namespace: None,
            image: image.into(),
            service_account: None,
            timeout: Duration::from_secs(900),
            resources: ResourceRequirements {
                requests: Some(quantities("250m", "256Mi")),
                limits: Some(quantities("1", "1Gi")),
                ..ResourceRequirements::default()
            },
            modules_path: None,
            cli_config_path: None,
            ttl_after_finished: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// `tofu plan -detailed-exitcode`, `tofu show -json` and `tofu show`.
    Plan,
    /// Plan, report the plan, and apply it if the operator answers that it is the approved
    /// one.
    Apply,
    /// `tofu destroy -auto-approve`.
    Destroy,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Plan => "plan",
            RunKind::Apply => "apply",
            RunKind::Destroy => "destroy",
        }
    }
}

/// The objects of one run, before they are created.
#[derive(Clone, Debug, PartialEq)]
pub struct RunObjects {
    pub job: Job,
    pub workspace: ConfigMap,
    /// A Secret, not a ConfigMap: plans and outputs can hold sensitive values, and department
    /// members may read ConfigMaps in their namespace.
    pub result: Secret,
}

/// The script the container runs. Fixed: nothing from the request is interpolated; what
/// varies comes in through the environment (`YZ_RUN`, `YZ_RESULT`, `YZ_MODULES`). The paths
/// default to the pod's; `YZ_WORK`, `YZ_WORKSPACE`, `YZ_SA_DIR` and `YZ_API` override them so
/// the script can be run outside a pod (the integration test does, as there is no kubelet).
///
/// It reports by JSON merge patches of the result Secret's `data` (base64 keeps the patch
/// valid JSON with nothing but `printf`); the last patch carries `exit-code`, so a report is
/// complete once that key is there. An apply first plans and reports `plan.json`, then waits
/// for the operator's `decision` (`apply` when the plan is the approved one, `stop`
/// otherwise) and applies that saved plan or nothing.
pub const SCRIPT: &str = r#"set -u
cd "${YZ_WORK:-/work}" || exit 1
cp "${YZ_WORKSPACE:-/workspace}"/* . || exit 1
if [ -n "${YZ_MODULES:-}" ]; then ln -s "$YZ_MODULES" modules; fi
[ -e "$TF_CLI_CONFIG_FILE" ] || : > "$TF_CLI_CONFIG_FILE"
sa="${YZ_SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}"
result="${YZ_API:-https://kubernetes.default.svc}/api/v1/namespaces/$(cat "$sa/namespace")/secrets/$YZ_RESULT"
api() { curl -sS --fail -A yunzhang-tofu-job --cacert "$sa/ca.crt" -H "Authorization: Bearer $(cat "$sa/token")" "$@"; }
report() {
  sep=''
  {
    printf '{"data":{'
    for f in "$@"; do
      if [ -f "$f" ]; then printf '%s"%s":"%s"' "$sep" "$f" "$(base64 < "$f" | tr -d '\n')"; sep=','; fi
    done
    printf '}}'
  } > patch.json
  api -X PATCH -H 'Content-Type: application/merge-patch+json' --data-binary @patch.json "$result" >/dev/null
}
decide() {
  while :; do
    got=$(api "$result") || return 1
    got=$(printf '%s' "$got" | tr -d ' \n')
    case "$got" in
      *'"decision":"YXBwbHk="'*) echo apply; return 0 ;;
      *'"decision":"c3RvcA=="'*) echo stop; return 0 ;;
    esac
    sleep 2
  done
}
: > log
rc=0
tofu init -input=false -no-color >>log 2>&1 || rc=$?
if [ "$rc" -eq 0 ]; then
  case "$YZ_RUN" in
  plan|apply)
    tofu plan -out=run.tfplan -input=false -no-color -detailed-exitcode -lock-timeout=300s >>log 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]; then
      rc=0
      tofu show -json run.tfplan >plan.json 2>>log || rc=$?
      tofu show -no-color run.tfplan >plan.txt 2>>log || rc=$?
    fi
    if [ "$rc" -eq 0 ] && [ "$YZ_RUN" = apply ]; then
      report plan.json || exit 3
      decision=$(decide) || exit 3
      if [ "$decision" = apply ]; then
        tofu apply -input=false -no-color -lock-timeout=300s run.tfplan >>log 2>&1 || rc=$?
      fi
      if [ "$rc" -eq 0 ]; then tofu output -json >outputs.json 2>>log || rc=$?; fi
    fi
    ;;
  destroy)
    tofu destroy -auto-approve -input=false -no-color -lock-timeout=300s >>log 2>&1 || rc=$?
    ;;
  *) echo "unknown run $YZ_RUN" >>log; rc=64 ;;
  esac
fi
printf '%s' "$rc" > exit-code
tail -c 65536 log > log.tail && mv log.tail log
report plan.json plan.txt outputs.json log exit-code || exit 3
exit "$rc"
"#;

/// A run's name: `yz-<kind>-<first 8 of the uid>-<nonce>`, at most 63 characters so it is a
/// valid label value (`job-name`) and leaves room for `-workspace` / `-result`.
pub fn run_name(kind: RunKind, ctx: &RunContext, nonce: &str) -> String {
    let uid: String = ctx
        .request
        .uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    let nonce: String = nonce
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("yz-{}-{uid}-{nonce}", kind.as_str())
}

/// The namespace a run's objects live in.
pub fn run_namespace(config: &JobConfig, ctx: &RunContext) -> String {
    config
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.request.namespace.clone())
}

/// The Job and ConfigMaps of one run. Pure. When the run namespace is the request's, all of
/// them are owned by the request; otherwise the caller makes the ConfigMaps owned by the Job
/// once it exists ([`owned_by_job`]).
pub fn build_run(
    config: &JobConfig,
    ctx: &RunContext,
    kind: RunKind,
    workspace: &RenderedWorkspace,
    name: &str,
) -> Result<RunObjects, ExecError> {
    let namespace = run_namespace(config, ctx);
    let request = &ctx.request;
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "yunzhang".to_owned(),
        ),
        (RUN_LABEL.to_owned(), kind.as_str().to_owned()),
        (REQUEST_UID_LABEL.to_owned(), request.uid.clone()),
        (
            REQUEST_NAMESPACE_LABEL.to_owned(),
            request.namespace.clone(),
        ),
        (REQUEST_NAME_LABEL.to_owned(), request.name.clone()),
    ]);
    let owners = (namespace == request.namespace).then(|| {
        vec![OwnerReference {
            api_version: ResourceRequest::api_version(&()).into_owned(),
            kind: ResourceRequest::kind(&()).into_owned(),
            name: request.name.clone(),
            uid: request.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        }]
    });
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.clone()),
        labels: Some(labels.clone()),
        owner_references: owners.clone(),
        ..ObjectMeta::default()
    };
    let workspace_name = format!("{name}-workspace");
    let result_name = format!("{name}-result");
    let credentials = match &ctx.credentials.secret {
        None => None,
        Some((secret_namespace, secret)) if *secret_namespace == namespace => {
            Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }])
        }
        Some((secret_namespace, secret)) => {
            return Err(ExecError(format!(
                "the credentials Secret {secret_namespace}/{secret} must be in the namespace the \
                 job executor runs in ({namespace}): a pod can only read Secrets of its own \
                 namespace. Move the Secret or set the executor's namespace"
            )));
        }
    };
    let env = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    };
    let cli_config = config
        .cli_config_path
        .clone()
        .unwrap_or_else(|| format!("{WORK_MOUNT}/tofu.rc"));
    let container = Container {
        name: "tofu".to_owned(),
        image: Some(config.image.clone()),
        command: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            SCRIPT.to_owned(),
        ]),
        working_dir: Some(WORK_MOUNT.to_owned()),
        env: Some(vec![
            env("YZ_RUN", kind.as_str()),
            env("YZ_RESULT", &result_name),
            env("YZ_MODULES", config.modules_path.as_deref().unwrap_or("")),
            env("HOME", WORK_MOUNT),
            env("TMPDIR", "/tmp"),
            env("TF_IN_AUTOMATION", "1"),
            env("TF_INPUT", "0"),
            env("CHECKPOINT_DISABLE", "1"),
            env("TF_CLI_CONFIG_FILE", &cli_config),
            env("KUBE_IN_CLUSTER_CONFIG", "true"),
        ]),
        env_from: credentials,
        resources: Some(config.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "workspace".to_owned(),
                mount_path: WORKSPACE_MOUNT.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "work".to_owned(),
                mount_path: WORK_MOUNT.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".to_owned(),
                mount_path: "/tmp".to_owned(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let empty_dir = |limit: &str| EmptyDirVolumeSource {
        medium: None,
        size_limit: Some(Quantity(limit.to_owned())),
    };
    let pod = PodSpec {
        restart_policy: Some("Never".to_owned()),
        service_account_name: config.service_account.clone(),
        // The token is how the backend reaches its state and the pod reports its result.
        automount_service_account_token: Some(true),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "workspace".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: workspace_name.clone(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "work".to_owned(),
                empty_dir: Some(empty_dir("2Gi")),
                ..Volume::default()
            },
            Volume {
                name: "tmp".to_owned(),
                empty_dir: Some(empty_dir("1Gi")),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    let job = Job {
        metadata: meta(name.to_owned()),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(config.timeout.as_secs().max(1) as i64),
            ttl_seconds_after_finished: Some(config.ttl_after_finished.as_secs() as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    Ok(RunObjects {
        job,
        workspace: ConfigMap {
            metadata: meta(workspace_name),
            data: Some(workspace.files.clone()),
            immutable: Some(true),
            ..ConfigMap::default()
        },
        result: Secret {
            metadata: meta(result_name),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        },
    })
}

/// `object` owned by the created `job` (same namespace), when the request can't own it.
pub fn owned_by_job(object: &mut ObjectMeta, job: &Job) {
    if object.owner_references.is_some() {
        return;
    }
    object.owner_references = job.controller_owner_ref(&()).map(|o| vec![o]);
}

/// What a finished run reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub exit_code: i32,
    pub log: String,
    /// `plan.json`, `plan.txt`, `outputs.json`, as far as the run made them.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl RunReport {
    fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }
}

/// The report in a result Secret, once the pod has written `exit-code`.
pub fn read_report(result: &Secret) -> Option<RunReport> {
    let data = result.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .map(|ByteString(b)| String::from_utf8_lossy(b).into_owned())
    };
    let exit_code = text("exit-code")?.trim().parse().unwrap_or(-1);
    Some(RunReport {
        exit_code,
        log: text("log").unwrap_or_default(),
        files: data
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "exit-code" | "log" | DECISION_KEY))
            .map(|(k, ByteString(v))| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Key of the operator's answer to an apply run's plan, in the result Secret.
pub const DECISION_KEY: &str = "decision";

/// What the operator tells an apply run, having seen its fresh plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The fresh plan has the approved hash: apply it.
    Apply,
    /// The fresh plan changes nothing: the approved plan is in effect already.
    InEffect,
    /// The fresh plan is something else: apply nothing.
    Refuse(PlanOutcome),
}

/// The decision for an apply run whose fresh plan is `fresh`, when `approved` was approved.
pub fn decide(fresh: PlanOutcome, approved: &str) -> Decision {
    if fresh.hash == approved {
        Decision::Apply
    } else if fresh.is_empty() {
        Decision::InEffect
    } else {
        Decision::Refuse(fresh)
    }
}

/// The `job` executor.
#[derive(Clone)]
pub struct JobExecutor {
    client: Client,
    config: JobConfig,
}

/// A started run.
struct Run {
    name: String,
    namespace: String,
    jobs: Api<Job>,
    results: Api<Secret>,
    deadline: tokio::time::Instant,
    waited: Duration,
    poll_interval: Duration,
}

impl Run {
    fn result_name(&self) -> String {
        format!("{}-result", self.name)
    }

    /// The result Secret as it is now. An error once the Job failed without reporting or the
    /// deadline passed.
    async fn observe(&self) -> Result<Secret, ExecError> {
        let (namespace, name) = (&self.namespace, &self.name);
        let result = self
            .results
            .get_opt(&self.result_name())
            .await
            .ok()
            .flatten();
        if let Some(result) = result.as_ref().filter(|r| read_report(r).is_some()) {
            return Ok(result.clone());
        }
        if let Ok(Some(job)) = self.jobs.get_opt(name).await
            && let Some(failed) = job
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True")
        {
            return Err(ExecError(format!(
                "the OpenTofu Job {namespace}/{name} failed without reporting ({}: {}); see \
                 `kubectl -n {namespace} logs job/{name}`. Check the image has sh, curl and \
                 base64, and that its service account may get and patch secrets in {namespace}",
                failed.reason.unwrap_or_default(),
                failed.message.unwrap_or_default()
            )));
        }
        if tokio::time::Instant::now() >= self.deadline {
            return Err(ExecError(format!(
                "the OpenTofu Job {namespace}/{name} reported no result within {}s; check that \
                 its pod was scheduled and its image pulled (`kubectl -n {namespace} describe \
                 job/{name}`)",
                self.waited.as_secs()
            )));
        }
        Ok(result.unwrap_or_default())
    }

    async fn wait(&self) -> Result<RunReport, ExecError> {
        loop {
            if let Some(report) = read_report(&self.observe().await?) {
                return Ok(report);
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    async fn tell(&self, decision: &str) -> Result<(), ExecError> {
        let patch = serde_json::json!({ "stringData": { DECISION_KEY: decision } });
        self.results
            .patch(
                &self.result_name(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| {
                ExecError(format!(
                    "answering the OpenTofu Job {}/{}: {e}",
                    self.namespace, self.name
                ))
            })?;
        Ok(())
    }
}

impl JobExecutor {
    pub fn new(client: Client, config: JobConfig) -> Self {
        JobExecutor { client, config }
    }

    /// Creates the run's objects: the Job first (so the others can be owned by it when the
    /// request can't own them); its pod waits for the workspace volume.
    async fn start(
        &self,
        ctx: &RunContext,
        kind: RunKind,
        workspace: &RenderedWorkspace,
    ) -> Result<Run, ExecError> {
        let config = JobConfig {
            timeout: ctx.timeout.unwrap_or(self.config.timeout),
            ..self.config.clone()
        };
        let nonce = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        );
        let name = run_name(kind, ctx, &nonce);
        let mut objects = build_run(&config, ctx, kind, workspace, &name)?;
        let namespace = run_namespace(&config, ctx);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let results: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        let api_error = |what: &str, e: kube::Error| {
            ExecError(format!(
                "creating the {what} of run {namespace}/{name}: {e}; the operator needs create on \
                 jobs, configmaps and secrets in {namespace}"
            ))
        };
        let pp = PostParams::default();
        let job = jobs
            .create(&pp, &objects.job)
            .await
            .map_err(|e| api_error("Job", e))?;
        owned_by_job(&mut objects.result.metadata, &job);
        owned_by_job(&mut objects.workspace.metadata, &job);
        let created = match results.create(&pp, &objects.result).await {
            Ok(_) => config_maps
                .create(&pp, &objects.workspace)
                .await
                .map(drop)
                .map_err(|e| api_error("workspace ConfigMap", e)),
            Err(e) => Err(api_error("result Secret", e)),
        };
        if let Err(e) = created {
            // The Job's pod would wait for its volume until the deadline: remove it now (the
            // garbage collector takes what it owns).
            let _ = jobs.delete(&name, &DeleteParams::background()).await;
            return Err(e);
        }
        info!(run = %format!("{namespace}/{name}"), kind = kind.as_str(), "started an OpenTofu Job");
        // Scheduling and pulling the image come before the Job's own deadline.
        let waited = config.timeout + Duration::from_secs(60);
        Ok(Run {
            name,
            namespace,
            jobs,
            results,
            deadline: tokio::time::Instant::now() + waited,
            waited,
            poll_interval: config.poll_interval,
        })
    }

    fn failed(ctx: &RunContext, kind: RunKind, report: &RunReport) -> ExecError {
        ExecError(format!(
            "tofu {} failed in a Job (exit {}):\n{}",
            kind.as_str(),
            report.exit_code,
            ctx.credentials.redact(tail_chars(&report.log, 3000))
        ))
    }

    async fn plan_run(
        &self,
        ctx: &RunContext,
        workspace: &RenderedWorkspace,
    ) -> Result<PlanOutcome, ExecError> {
        let report = self
            .start(ctx, RunKind::Plan, workspace)
            .await?
            .wait()
            .await?;
        if report.exit_code != 0 {
            return Err(Self::failed(ctx, RunKind::Plan, &report));
        }
        let mut outcome = plan_outcome(workspace, report.file("plan.json"))?;
        outcome.readable = report
            .file("plan.txt")
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        Ok(outcome)
    }

    async fn apply_run(
        &self,
        ctx: &RunContext,
        workspace: &RenderedWorkspace,
        plan_hash: &str,
    ) -> Result<ApplyOutcome, ExecError> {
        let run = self.start(ctx, RunKind::Apply, workspace).await?;
        let mut decision = None;
        let report = loop {
            let result = run.observe().await?;
            if let Some(report) = read_report(&result) {
                break report;
            }
            let planned = result
                .data
                .as_ref()
                .and_then(|d| d.get("plan.json"))
                .map(|ByteString(b)| b.as_slice());
            if decision.is_none()
                && let Some(plan) = planned
            {
                let decided = decide(plan_outcome(workspace, Some(plan))?, plan_hash);
                run.tell(if decided == Decision::Apply {
                    "apply"
                } else {
                    "stop"
                })
                .await?;
                decision = Some(decided);
            }
            tokio::time::sleep(run.poll_interval).await;
        };
        if report.exit_code != 0 {
            return Err(Self::failed(ctx, RunKind::Apply, &report));
        }
        match decision {
            None => Err(ExecError(format!(
                "the OpenTofu Job {}/{} finished without showing its plan; nothing was applied",
                run.namespace, run.name
            ))),
            Some(Decision::Refuse(fresh)) => Err(ExecError(format!(
                "plan {plan_hash} can no longer be applied: the infrastructure and its state \
                 changed since it was made ({} to add, {} to change, {} to destroy now). Nothing \
                 was applied. Make a new plan and have it approved again.",
                fresh.add, fresh.change, fresh.destroy
            ))),
            Some(Decision::Apply | Decision::InEffect) => {
                let outputs: Value = report
                    .file("outputs.json")
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .ok_or_else(|| {
                        ExecError("the apply Job reported no valid outputs.json".to_owned())
                    })?;
                Ok(split_outputs(&outputs))
            }
        }
    }
}

/// The plan outcome from a reported `plan.json`.
fn plan_outcome(
    workspace: &RenderedWorkspace,
    plan_json: Option<&[u8]>,
) -> Result<PlanOutcome, ExecError> {
    let json: Value = plan_json
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or_else(|| ExecError("the OpenTofu Job reported no valid plan.json".to_owned()))?;
    summarize_plan(&workspace.hash, &json)
}

impl Executor for JobExecutor {
    fn plan(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<PlanOutcome, ExecError>> {
        let this = self.clone();
        Box::pin(async move { this.plan_run(&ctx, &workspace).await })
    }

    /// A Job plans afresh and applies only if that plan has the approved hash (or does
    /// nothing, and succeeds, if the plan is empty: applied already).
    fn apply(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
        plan_hash: String,
    ) -> BoxFuture<'static, Result<ApplyOutcome, ExecError>> {
        let this = self.clone();
        Box::pin(async move { this.apply_run(&ctx, &workspace, &plan_hash).await })
    }

    fn destroy(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<(), ExecError>> {
        let this = self.clone();
        Box::pin(async move {
            let run = this.start(&ctx, RunKind::Destroy, &workspace).await?;
            let report = run.wait().await?;
            if report.exit_code != 0 {
                return Err(Self::failed(&ctx, RunKind::Destroy, &report));
            }
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
            let outcome = this.plan_run(&ctx, &workspace).await?;
            Ok((!outcome.is_empty()).then_some(outcome))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iac::{Credentials, RequestRef};

    fn ctx() -> RunContext {
        RunContext {
            request: RequestRef {
                namespace: "gx-finance".to_owned(),
                name: "tax-portal".to_owned(),
                uid: "6f1c2a7e-3b9d-4c1e-9a57-0d2b8e4f6a10".to_owned(),
            },
            timeout: None,
            credentials: Credentials {
                secret: Some(("gx-finance".to_owned(), "gx-openstack-creds".to_owned())),
                env: BTreeMap::new(),
            },
        }
    }

    fn workspace() -> RenderedWorkspace {
        RenderedWorkspace {
            files: [("main.tf".to_owned(), "module \"web\" {}\n".to_owned())].into(),
            hash: "sha256:ws".to_owned(),
        }
    }

    fn config() -> JobConfig {
        JobConfig {
            service_account: Some("yunzhang-tofu".to_owned()),
            timeout: Duration::from_secs(600),
            modules_path: Some("/opt/yunzhang/modules".to_owned()),
            ..JobConfig::new("registry.example.gov.cn/yunzhang/tofu:1.10.10")
        }
    }

    #[test]
    fn the_plan_job_runs_the_image_as_its_account_within_limits_and_the_deadline() {
        let name = run_name(RunKind::Plan, &ctx(), "19a2b3c4d5e");
        assert_eq!(name, "yz-plan-6f1c2a7e-19a2b3c4d5e");
        let run = build_run(&config(), &ctx(), RunKind::Plan, &workspace(), &name).expect("run");
        let spec = run.job.spec.as_ref().expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        let pod = spec.template.spec.as_ref().expect("pod");
        assert_eq!(pod.service_account_name.as_deref(), Some("yunzhang-tofu"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let security = pod.security_context.as_ref().expect("pod security");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.run_as_user, Some(RUN_AS));
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example.gov.cn/yunzhang/tofu:1.10.10")
        );
        let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
        assert_eq!(
            limits.and_then(|l| l.get("memory")),
            Some(&Quantity("1Gi".to_owned()))
        );
        let c_security = container
            .security_context
            .as_ref()
            .expect("container security");
        assert_eq!(c_security.read_only_root_filesystem, Some(true));
        assert_eq!(c_security.allow_privilege_escalation, Some(false));
        let env: BTreeMap<&str, &str> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(env["YZ_RUN"], "plan");
        assert_eq!(env["YZ_RESULT"], format!("{name}-result"));
        assert_eq!(env["YZ_MODULES"], "/opt/yunzhang/modules");
        assert_eq!(env["KUBE_IN_CLUSTER_CONFIG"], "true");
        let from = container.env_from.as_ref().expect("credentials");
        assert_eq!(
            from[0].secret_ref.as_ref().map(|s| s.name.as_str()),
            Some("gx-openstack-creds")
        );
        // The workspace: a ConfigMap with the files, mounted read-only; owned by the request.
        assert_eq!(run.workspace.data.as_ref(), Some(&workspace().files));
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == WORKSPACE_MOUNT)
            .expect("workspace mount");
        assert_eq!(mount.read_only, Some(true));
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .expect("workspace volume");
        assert_eq!(
            volume.config_map.as_ref().map(|c| c.name.as_str()),
            Some(format!("{name}-workspace").as_str())
        );
        for meta in [
            &run.job.metadata,
            &run.workspace.metadata,
            &run.result.metadata,
        ] {
            let owner = &meta.owner_references.as_ref().expect("owned")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str()),
                ("ResourceRequest", ctx().request.uid.as_str())
            );
            assert_eq!(meta.namespace.as_deref(), Some("gx-finance"));
        }
    }

    #[test]
    fn in_an_executor_namespace_nothing_is_owned_by_the_request_and_credentials_must_be_there() {
        let config = JobConfig {
            namespace: Some("yunzhang-runs".to_owned()),
            ..config()
        };
        let err = build_run(&config, &ctx(), RunKind::Plan, &workspace(), "yz-plan-x-1")
            .expect_err("credentials in another namespace");
        assert!(err.0.contains("must be in the namespace"), "{err}");
        let mut ctx = ctx();
        ctx.credentials.secret = Some(("yunzhang-runs".to_owned(), "creds".to_owned()));
        let run = build_run(
            &config,
            &ctx,
            RunKind::Destroy,
            &workspace(),
            "yz-destroy-x-1",
        )
        .expect("run");
        assert_eq!(run.job.metadata.namespace.as_deref(), Some("yunzhang-runs"));
        assert!(run.job.metadata.owner_references.is_none());
        let mut job = run.job.clone();
        job.metadata.uid = Some("job-uid".to_owned());
        let mut result = run.result.clone();
        owned_by_job(&mut result.metadata, &job);
        let owners = result.metadata.owner_references.expect("owned by the Job");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("Job", "job-uid")
        );
    }

    #[test]
    fn names_fit_a_label_and_the_script_takes_nothing_from_the_request() {
        let mut long = ctx();
        long.request.uid = "x".repeat(200);
        let name = run_name(RunKind::Destroy, &long, &"f".repeat(100));
        assert!(name.len() + "-workspace".len() <= 63, "{name}");
        assert!(!SCRIPT.contains("tax-portal"));
    }

    #[test]
    fn an_apply_run_applies_only_the_approved_plan() {
        let plan = |hash: &str, add: u32| PlanOutcome {
            hash: hash.to_owned(),
            add,
            ..PlanOutcome::default()
        };
        assert_eq!(decide(plan("sha256:a", 3), "sha256:a"), Decision::Apply);
        assert_eq!(decide(plan("sha256:b", 0), "sha256:a"), Decision::InEffect);
        assert_eq!(
            decide(plan("sha256:c", 1), "sha256:a"),
            Decision::Refuse(plan("sha256:c", 1))
        );
    }

    #[test]
    fn a_report_is_read_once_the_exit_code_is_there() {
        let mut result = Secret::default();
        assert_eq!(read_report(&result), None);
        result.data = Some(BTreeMap::from([
            ("exit-code".to_owned(), ByteString(b"0".to_vec())),
            ("log".to_owned(), ByteString(b"Initializing".to_vec())),
            ("plan.json".to_owned(), ByteString(b"{}".to_vec())),
        ]));
        let report = read_report(&result).expect("report");
        assert_eq!(report.exit_code, 0);
        assert_eq!(report.log, "Initializing");
        assert_eq!(report.files.keys().collect::<Vec<_>>(), ["plan.json"]);
    }
}
