//! Pure: the notification endpoints, parsed from the `config.yaml` key of the notifications
//! Secret, with errors that name the field at fault.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::message::NotifyEvent;

/// How an endpoint wants its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON body (the notification plus `id`), signed with HMAC-SHA256 when `secret` is set.
    Generic,
    /// WeCom (企业微信) group robot, markdown message. The key is in the URL.
    Wecom,
    /// DingTalk (钉钉) robot, markdown message; with `secret`, the robot's 加签 `sign`.
    Dingtalk,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Generic => "generic",
            Format::Wecom => "wecom",
            Format::Dingtalk => "dingtalk",
        }
    }
}

/// One webhook endpoint. `Debug` never shows the URL or the secret: robot URLs carry keys.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    /// Shown in logs and metrics instead of the URL.
    pub name: String,
    pub format: Format,
    pub url: String,
    /// HMAC key (generic) or DingTalk sign secret.
    pub secret: Option<String>,
    /// The events this endpoint receives.
    pub events: BTreeSet<NotifyEvent>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("url", &"<redacted>")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("events", &self.events)
            .finish()
    }
}

/// The parsed configuration.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct NotificationsConfig {
    pub endpoints: Vec<Endpoint>,
}

/// A configuration error, naming the field (e.g. `endpoints[1].url`) and what is wrong with it.
/// It never quotes a URL or a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    format: Format,
    url: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    events: Option<Vec<NotifyEvent>>,
}

/// Parse `config.yaml`:
///
/// ```yaml
/// endpoints:
/// - name: cloud-office            # shown in logs and metrics
///   format: wecom                 # generic | wecom | dingtalk
///   url: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...
///   events: [awaiting-approval]   # default: every event
/// - name: finance-dingtalk
///   format: dingtalk
///   url: https://oapi.dingtalk.com/robot/send?access_token=...
///   secret: SEC...                # the robot's 加签 secret (optional)
/// - name: audit-sink
///   format: generic
///   url: https://audit.example.gov.cn/hooks/yunzhang
///   secret: a-long-random-key     # HMAC-SHA256 key for X-Yunzhang-Signature
/// ```
pub fn parse(yaml: &str) -> Result<NotificationsConfig, ConfigError> {
    let raw: RawConfig = serde_yaml::from_str(yaml).map_err(|e| ConfigError {
        // serde_yaml names the path (e.g. `endpoints[0].format: unknown variant ...`).
        field: "config.yaml".into(),
        problem: e.to_string(),
    })?;
    let mut names = BTreeSet::new();
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    for (i, e) in raw.endpoints.into_iter().enumerate() {
        let err = |field: &str, problem: &str| ConfigError {
            field: format!("endpoints[{i}].{field}"),
            problem: problem.into(),
        };
        let name_ok = !e.name.is_empty()
            && e.name.len() <= 63
            && e.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(err(
                "name",
                "1 to 63 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if !names.insert(e.name.clone()) {
            return Err(err("name", &format!("{:?} is used twice", e.name)));
        }
        match reqwest::Url::parse(&e.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            // Never quote the URL: it may carry the robot's key.
            _ => return Err(err("url", "not an absolute http(s) URL")),
        }
        match (&e.secret, e.format) {
            (Some(s), _) if s.is_empty() => {
                return Err(err("secret", "empty: leave it out, or set a key"));
            }
            (Some(_), Format::Wecom) => {
                return Err(err(
                    "secret",
                    "WeCom robots are not signed (the key is in the URL): leave it out",
                ));
            }
            _ => {}
        }
        let events: BTreeSet<NotifyEvent> = match e.events {
            None => NotifyEvent::ALL.into_iter().collect(),
            Some(list) if list.is_empty() => {
                return Err(err(
                    "events",
                    "empty: leave it out to receive every event, or remove the endpoint",
                ));
            }
            Some(list) => list.into_iter().collect(),
        };
        endpoints.push(Endpoint {
            name: e.name,
            format: e.format,
            url: e.url,
            secret: e.secret,
            events,
        });
    }
    Ok(NotificationsConfig { endpoints })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let cfg = parse(
            r#"
endpoints:
- name: cloud-office
  format: wecom
  url: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k
  events: [awaiting-approval]
- name: finance-dingtalk
  format: dingtalk
  url: https://oapi.dingtalk.com/robot/send?access_token=t
  secret: SECabc
- name: audit-sink
  format: generic
  url: http://127.0.0.1:9/hook
  secret: key
"#,
        )
        .unwrap();
        assert_eq!(cfg.endpoints.len(), 3);
        assert_eq!(cfg.endpoints[0].format, Format::Wecom);
        assert_eq!(
            cfg.endpoints[0].events,
            BTreeSet::from([NotifyEvent::AwaitingApproval])
        );
        assert_eq!(cfg.endpoints[1].events.len(), 6, "default: every event");
        assert_eq!(cfg.endpoints[2].secret.as_deref(), Some("key"));
    }

    #[test]
    fn empty_config_has_no_endpoints() {
        assert_eq!(parse("{}").unwrap().endpoints, vec![]);
    }

    fn error_of(yaml: &str) -> String {
        parse(yaml).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let e = error_of("endpoints:\n- {name: a, format: slack, url: 'https://x'}\n");
        assert!(
            e.contains("endpoints[0].format") && e.contains("unknown variant `slack`"),
            "{e}"
        );
        let e = error_of("endpoints:\n- {name: a, format: generic, url: 'https://x', evnts: []}\n");
        assert!(e.contains("endpoints[0]") && e.contains("evnts"), "{e}");
        let e = error_of(
            "endpoints:\n- {name: a, format: generic, url: 'https://x', events: [done]}\n",
        );
        assert!(e.contains("endpoints[0].events"), "{e}");
        let e = error_of("endpoints:\n- {name: a, format: generic}\n");
        assert!(e.contains("missing field `url`"), "{e}");
        assert_eq!(
            error_of("endpoints:\n- {name: 'a b', format: generic, url: 'https://x'}\n"),
            "endpoints[0].name: 1 to 63 characters of letters, digits, '-', '_' or '.'"
        );
        assert_eq!(
            error_of(
                "endpoints:\n- {name: a, format: generic, url: 'https://x'}\n- {name: a, format: generic, url: 'https://y'}\n"
            ),
            "endpoints[1].name: \"a\" is used twice"
        );
        assert_eq!(
            error_of("endpoints:\n- {name: a, format: generic, url: 'ftp://x/?key=SECRET'}\n"),
            "endpoints[0].url: not an absolute http(s) URL"
        );
        assert_eq!(
            error_of("endpoints:\n- {name: a, format: wecom, url: 'https://x', secret: s}\n"),
            "endpoints[0].secret: WeCom robots are not signed (the key is in the URL): leave it out"
        );
        assert_eq!(
            error_of("endpoints:\n- {name: a, format: generic, url: 'https://x', secret: ''}\n"),
            "endpoints[0].secret: empty: leave it out, or set a key"
        );
        assert_eq!(
            error_of("endpoints:\n- {name: a, format: generic, url: 'https://x', events: []}\n"),
            "endpoints[0].events: empty: leave it out to receive every event, or remove the endpoint"
        );
    }

    #[test]
    fn debug_hides_url_and_secret() {
        let cfg = parse(
            "endpoints:\n- {name: d, format: dingtalk, url: 'https://x/?access_token=TOKEN', secret: SECRET}\n",
        )
        .unwrap();
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("TOKEN") && !shown.contains("SECRET"),
            "{shown}"
        );
        assert!(shown.contains("\"d\""));
    }
}
