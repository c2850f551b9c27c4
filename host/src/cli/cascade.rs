//! Flags shared by the commands that route: where the cloud is and how to escalate.

use edgecascade::cloud::{Anthropic, Bedrock, BedrockAuth, CloudClient, HttpConfig, OpenAi, Resilient, RetryPolicy};
use edgecascade::router::{BudgetLimits, EscalationLog, Redactor};
use edgecascade::{CascadeConfig, Metrics, Plugin, Router};
use std::path::PathBuf;
use std::sync::Arc;

/// Which API the cloud speaks.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Api {
    /// OpenAI-compatible chat completions (also another `edgecascade serve`).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Amazon Bedrock Converse (Nova and every other Bedrock model). --cloud is the runtime
    /// endpoint, e.g. https://bedrock-runtime.us-east-1.amazonaws.com; credentials come from
    /// $AWS_BEARER_TOKEN_BEDROCK (an API key), else $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY,
    /// $AWS_SESSION_TOKEN and $AWS_REGION (SigV4).
    Bedrock,
}

#[derive(clap::Args, Clone, Debug)]
pub struct CascadeArgs {
    /// Base URL of the large model's API, e.g. http://127.0.0.1:8080/v1. Without it, nothing escalates.
    /// The key comes from $OPENAI_API_KEY (or $EDGECASCADE_API_KEY), $ANTHROPIC_API_KEY, or the AWS
    /// variables (see --cloud-api bedrock).
    #[arg(long, value_name = "URL")]
    pub cloud: Option<String>,

    /// The API the cloud speaks.
    #[arg(long, visible_alias = "api", value_enum, default_value = "openai")]
    pub cloud_api: Api,

    /// Model name to ask the cloud for [default: the manifest's policy.cloud_model, else the plugin's name].
    #[arg(long, value_name = "NAME")]
    pub cloud_model: Option<String>,

    /// Escalate below this local confidence, 0 to 1 [default: the manifest's policy.threshold].
    #[arg(long, value_name = "X")]
    pub threshold: Option<f32>,

    /// Whole-request deadline; the cloud gets what the local model leaves, e.g. 3s, 500ms.
    #[arg(long, value_name = "DURATION", default_value_t = edgecascade::router::DEFAULT_DEADLINE.into())]
    pub deadline: humantime::Duration,

    /// Cloud timeout for one attempt (connect + response).
    #[arg(long, value_name = "DURATION", default_value_t = edgecascade::cloud::DEFAULT_READ_TIMEOUT.into())]
    pub cloud_timeout: humantime::Duration,

    /// Attempts per cloud call, the first included (retries back off with jitter and honour Retry-After).
    #[arg(long, value_name = "N", default_value_t = edgecascade::cloud::DEFAULT_ATTEMPTS)]
    pub attempts: u32,

    /// Cloud calls allowed per minute, per plugin [default: unlimited].
    #[arg(long, value_name = "N")]
    pub budget_per_minute: Option<u32>,

    /// Cloud calls allowed per day, per plugin [default: unlimited].
    #[arg(long, value_name = "N")]
    pub budget_per_day: Option<u32>,

    /// Cloud answers cached for identical inputs (0 turns the cache off).
    #[arg(long, value_name = "N", default_value_t = edgecascade::router::DEFAULT_CACHE_ENTRIES)]
    pub cache_entries: usize,

    /// Append every escalation (redacted input + cloud answer) to DIR/<plugin>.jsonl.
    #[arg(long, value_name = "DIR")]
    pub escalation_log: Option<PathBuf>,

    /// Extra redaction rule PATTERN=REPLACEMENT (a regex), applied after the built-in
    /// email, phone, card and IP rules (repeatable).
    #[arg(long, value_name = "PATTERN=REPLACEMENT")]
    pub redact: Vec<String>,

    /// Turn the built-in redaction rules off.
    #[arg(long)]
    pub no_default_redaction: bool,

    /// Ask an OpenAI-compatible cloud for the N most likely first tokens (logprobs, 1-20), so that
    /// classifier answers come back as a distribution over the labels: soft labels for the
    /// escalation log and the distillation loop. Off (0) by default: some models refuse it with a 400.
    /// Anthropic and Bedrock return no logprobs; an `edgecascade serve` tier always sends its scores.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cloud_logprobs: u8,

    /// Also send this share (0 to 1) of confident local answers to the cloud, as an audit sample:
    /// its agreement is in /metrics, and the audited answers are logged for retraining.
    /// Costs that share of the confidently-local requests in cloud calls
    /// [default: the manifest's policy.audit_rate, else 0].
    #[arg(long, value_name = "X")]
    pub audit_rate: Option<f64>,
}

impl CascadeArgs {
    /// The cloud client, wrapped with retries and a circuit breaker; `None` without --cloud.
    /// Fails when the API's credentials are incomplete (Bedrock's, for now).
    pub fn client(&self) -> anyhow::Result<Option<Arc<dyn CloudClient>>> {
        let Some(url) = self.cloud.as_ref() else { return Ok(None) };
        let policy = RetryPolicy { attempts: self.attempts.max(1), ..RetryPolicy::default() };
        Ok(Some(match self.cloud_api {
            Api::Openai => {
                let client = OpenAi::builder(url).read_timeout(*self.cloud_timeout).logprobs(self.cloud_logprobs);
                Arc::new(Resilient::new(client.build(), policy))
            }
            Api::Anthropic => {
                let mut c = Anthropic::with_url(url).config().clone();
                c.read_timeout = *self.cloud_timeout;
                Arc::new(Resilient::new(Anthropic::new(c), policy))
            }
            Api::Bedrock => {
                // The credentials are BedrockAuth's; the config carries none.
                let mut c = HttpConfig::new(url, "AWS_BEARER_TOKEN_BEDROCK");
                c.api_key = None;
                c.read_timeout = *self.cloud_timeout;
                let auth = BedrockAuth::from_env(url).map_err(|e| anyhow::anyhow!("--cloud-api bedrock: {e}"))?;
                Arc::new(Resilient::new(Bedrock::new(c, auth), policy))
            }
        }))
    }

    /// The cascade settings for `plugin`: these flags over the manifest's defaults.
    pub fn config(&self, plugin: &Plugin) -> anyhow::Result<CascadeConfig> {
        let mut config = CascadeConfig::for_plugin(plugin);
        if let Some(t) = self.threshold {
            anyhow::ensure!((0.0..=1.0).contains(&t), "--threshold {t} is outside 0..1");
            config.threshold = t;
        }
        if let Some(m) = &self.cloud_model {
            config.cloud_model = m.clone();
        }
        if let Some(rate) = self.audit_rate {
            anyhow::ensure!((0.0..=1.0).contains(&rate), "--audit-rate {rate} is outside 0..1");
            config.audit_rate = rate;
        }
        config.deadline = *self.deadline;
        config.budget = BudgetLimits { per_minute: self.budget_per_minute, per_day: self.budget_per_day };
        config.cache_entries = self.cache_entries;
        let mut redactor = if self.no_default_redaction { Redactor::none() } else { Redactor::default() };
        for rule in &self.redact {
            let (pattern, replacement) =
                rule.split_once('=').ok_or_else(|| anyhow::anyhow!("--redact {rule:?}: use PATTERN=REPLACEMENT"))?;
            redactor =
                redactor.with_rule(pattern, replacement).map_err(|e| anyhow::anyhow!("--redact {pattern:?}: {e}"))?;
        }
        config.redactor = redactor;
        Ok(config)
    }

    /// The router for `plugin`, with these flags over the manifest's defaults.
    pub fn router(
        &self,
        plugin: Plugin,
        cloud: Option<Arc<dyn CloudClient>>,
        metrics: Metrics,
    ) -> anyhow::Result<Router> {
        let config = self.config(&plugin)?;
        let name = plugin.name().to_string();
        let mut router = Router::new(plugin, cloud, config, metrics);
        if let Some(dir) = &self.escalation_log {
            router = router.with_log(EscalationLog::open(dir.join(format!("{name}.jsonl")))?);
        }
        Ok(router)
    }
}
