//! Judging a MigrationWorkload's hooks as it is created or changed (pure): each names a
//! HookTemplate that exists and passes exactly the parameters it takes. The shell re-checks when
//! the hook is due (a template may change or go in between), and also checks the image.

use std::collections::BTreeMap;

use crate::{
    api::{HookTemplateSpec, migration_workload::Hooks},
    lifecycle::migration::check_parameters,
};

/// Whether every hook of `hooks` can run: `templates` are the templates its hooks name, those
/// that exist.
pub fn judge_hooks(
    hooks: &Hooks,
    templates: &BTreeMap<String, HookTemplateSpec>,
) -> Result<(), String> {
    let named = [
        ("preCutover", &hooks.pre_cutover),
        ("postCutover", &hooks.post_cutover),
    ];
    for (field, hook) in named {
        let Some(hook) = hook else { continue };
        let Some(template) = templates.get(&hook.template) else {
            return Err(format!(
                "spec.hooks.{field}.template: HookTemplate {} does not exist; the platform's hooks are listed by kubectl get hooktemplates",
                hook.template
            ));
        };
        check_parameters(hook, template)
            .map_err(|why| format!("spec.hooks.{field}.parameters: {why}"))?;
    }
    Ok(())
}

/// The template names `hooks` uses.
pub fn templates_named(hooks: &Hooks) -> Vec<&str> {
    [&hooks.pre_cutover, &hooks.post_cutover]
        .into_iter()
        .flatten()
        .map(|h| h.template.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{hook_template::HookParameter, migration_workload::Hook};

    #[test]
    fn a_hook_must_name_a_template_and_pass_what_it_takes() {
        let template = HookTemplateSpec {
            description: None,
            image: "registry.example.gov.cn/migration/sync:1.4".into(),
            command: vec![],
            args: vec![],
            service_account_name: None,
            timeout_seconds: 60,
            parameters: vec![HookParameter {
                name: "SOURCE".into(),
                description: None,
                required: true,
            }],
        };
        let templates = BTreeMap::from([("sync".to_owned(), template)]);
        let hook = |template: &str, params: &[(&str, &str)]| Hook {
            template: template.into(),
            parameters: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let pre = |h| Hooks {
            pre_cutover: Some(h),
            post_cutover: None,
        };
        assert!(judge_hooks(&pre(hook("sync", &[("SOURCE", "db")])), &templates).is_ok());
        let missing = judge_hooks(&pre(hook("shell", &[])), &templates).unwrap_err();
        assert!(
            missing
                .starts_with("spec.hooks.preCutover.template: HookTemplate shell does not exist"),
            "{missing}"
        );
        let post = Hooks {
            pre_cutover: None,
            post_cutover: Some(hook("sync", &[("SOURCE", "db"), ("CMD", "sh")])),
        };
        let extra = judge_hooks(&post, &templates).unwrap_err();
        assert!(
            extra.starts_with("spec.hooks.postCutover.parameters: parameter CMD is not one of HookTemplate sync's (SOURCE)"),
            "{extra}"
        );
        assert_eq!(templates_named(&post), vec!["sync"]);
    }
}
