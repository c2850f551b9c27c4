//! One JSON POST with every limit a cloud call needs: a deadline, a body
//! cap, no redirects, and errors classified for retries and metrics.

use super::{CloudError, HttpConfig, clip};
use std::time::{Duration, Instant};

/// An agent that never follows redirects and reports every status as a response.
pub(crate) fn agent(config: &HttpConfig) -> ureq::Agent {
    let mut builder = ureq::Agent::config_builder()
        .timeout_connect(Some(config.connect_timeout))
        .timeout_global(Some(config.read_timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(concat!("edgecascade/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &config.ca_pem {
        use ureq::tls::{PemItem, RootCerts, TlsConfig};
        let certs: Vec<_> = ureq::tls::parse_pem(pem.as_bytes())
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        builder = builder.tls_config(TlsConfig::builder().root_certs(RootCerts::new_with_certs(&certs)).build());
    }
    builder.build().into()
}

/// POSTs `body` (JSON text: these exact bytes are sent, so a signature over
/// them holds) and returns the parsed JSON reply.
pub(crate) fn post_json(
    agent: &ureq::Agent,
    config: &HttpConfig,
    url: &str,
    headers: &[(&str, String)],
    body: &str,
    deadline: Instant,
) -> Result<serde_json::Value, CloudError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(CloudError::Timeout(Duration::ZERO));
    }
    let budget = remaining.min(config.read_timeout);
    let mut request = agent
        .post(url)
        .config()
        .timeout_global(Some(budget))
        .timeout_connect(Some(config.connect_timeout.min(budget)))
        .build()
        .header("content-type", "application/json")
        .header("accept", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let mut response = request.send(body).map_err(|e| transport_error(e, budget))?;
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
    let location = header("location");
    // AWS names the error in a header (`ThrottlingException:http://…`); keep the name for the message.
    let aws_error = header("x-amzn-errortype").map(|t| t.split(':').next().unwrap_or_default().to_string());
    let bytes = response
        .body_mut()
        .with_config()
        .limit(config.max_body)
        .read_to_vec()
        .map_err(|e| transport_error(e, budget))?;
    if (300..400).contains(&status) {
        return Err(CloudError::Redirect(format!("HTTP {status} to {}", location.unwrap_or_default())));
    }
    let text = String::from_utf8(bytes).map_err(|_| CloudError::BadReply("the body is not UTF-8".into()))?;
    if !(200..300).contains(&status) {
        let body = match aws_error {
            Some(name) => format!("{name}: {}", clip(&text)),
            None => clip(&text),
        };
        if status == 401 || status == 403 {
            return Err(CloudError::Auth(format!("HTTP {status}: {body}")));
        }
        return Err(CloudError::Status { status, retry_after, body });
    }
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        return Err(CloudError::BadReply(format!("content type {content_type:?}, expected application/json")));
    }
    serde_json::from_str(&text).map_err(|e| CloudError::BadReply(format!("not JSON ({e}): {}", clip(&text))))
}

fn transport_error(e: ureq::Error, budget: Duration) -> CloudError {
    match e {
        ureq::Error::Timeout(_) => CloudError::Timeout(budget),
        ureq::Error::BodyExceedsLimit(limit) => CloudError::BadReply(format!("body larger than {limit} bytes")),
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => CloudError::Redirect(e.to_string()),
        ureq::Error::Io(io)
            if io.kind() == std::io::ErrorKind::TimedOut || io.kind() == std::io::ErrorKind::WouldBlock =>
        {
            CloudError::Timeout(budget)
        }
        ureq::Error::Protocol(p) => CloudError::BadReply(format!("HTTP protocol error: {p}")),
        other => CloudError::Connect(other.to_string()),
    }
}

/// `Retry-After` as seconds (the HTTP-date form is rare for APIs and is ignored). The
/// `try_` conversion matters: the value is the server's, and `from_secs_f64` panics past `Duration::MAX`.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<f64>().ok().and_then(|s| Duration::try_from_secs_f64(s).ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_after_parses_seconds_only() {
        use super::parse_retry_after as p;
        assert_eq!(p("2"), Some(std::time::Duration::from_secs(2)));
        assert_eq!(p(" 0.5 "), Some(std::time::Duration::from_millis(500)));
        assert_eq!(p("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(p("-1"), None);
        for huge in ["20000000000000000000", "1e300", "inf", "NaN"] {
            assert_eq!(p(huge), None, "{huge}");
        }
    }
}
