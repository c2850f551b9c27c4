//! Helpers for classifier plugins: turn probabilities into answers, phrase a
//! classification task for a large model, and read its reply.

use crate::{Answer, ChatMessage, Error, Prompt, Role, Score};

/// A numerically stable softmax with a temperature (1.0 leaves logits as they are).
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| ((l - max) / t).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Checks that `probs` are finite probabilities aligned with `labels`, then builds the answer.
pub fn answer(labels: &[String], probs: &[f32]) -> Result<Answer, Error> {
    if probs.len() != labels.len() {
        return Err(Error::model(format!("the model gave {} scores for {} labels", probs.len(), labels.len())));
    }
    if probs.iter().any(|p| !p.is_finite()) {
        return Err(Error::model("the model produced a non-finite score"));
    }
    Ok(Answer::from_probs(labels, probs))
}

/// Phrases a single-label classification for a chat model.
///
/// The reply is expected to be one label; [`parse_reply`] also accepts JSON.
pub fn prompt(task: &str, labels: &[String], text: &str) -> Prompt {
    let system = format!(
        "You are a careful classifier. {task} Reply with exactly one label from this list \
         and nothing else: {}.",
        labels.join(", ")
    );
    Prompt {
        messages: vec![
            ChatMessage { role: Role::System, content: system },
            ChatMessage { role: Role::User, content: text.to_string() },
        ],
        max_tokens: Some(16),
    }
}

/// Reads a large model's reply into an answer.
///
/// Accepts, in order: an edgecascade answer as JSON (what `edgecascade serve`
/// returns, keeping its confidence and scores); a JSON object with a `label`;
/// or text naming exactly one label (a bare label counts as certain).
pub fn parse_reply(labels: &[String], reply: &str) -> Result<Answer, Error> {
    let trimmed = reply.trim();
    if trimmed.starts_with('{') {
        if let Ok(answer) = serde_json::from_str::<Answer>(trimmed) {
            return validate(labels, answer);
        }
        #[derive(serde::Deserialize)]
        struct Labelled {
            label: String,
        }
        if let Ok(l) = serde_json::from_str::<Labelled>(trimmed) {
            return certain(labels, &l.label, reply);
        }
    }
    certain(labels, trimmed, reply)
}

fn validate(labels: &[String], answer: Answer) -> Result<Answer, Error> {
    match &answer.label {
        Some(l) if labels.contains(l) && (0.0..=1.0).contains(&answer.confidence) => Ok(answer),
        _ => Err(Error::bad_reply(format!("the reply's answer has no known label: {answer:?}"))),
    }
}

fn certain(labels: &[String], text: &str, reply: &str) -> Result<Answer, Error> {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { ' ' })
        .collect::<String>()
        .to_lowercase();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let found: Vec<&String> = labels.iter().filter(|label| words.contains(&label.to_lowercase().as_str())).collect();
    match found.as_slice() {
        [one] => Ok(Answer {
            label: Some((*one).clone()),
            scores: vec![Score { label: (*one).clone(), score: 1.0 }],
            confidence: 1.0,
            tensors: Vec::new(),
        }),
        [] => Err(Error::bad_reply(format!("no known label in the reply {:?}", clip(reply)))),
        _ => Err(Error::bad_reply(format!("several labels in the reply {:?}", clip(reply)))),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["business", "sport", "tech"].map(String::from).to_vec()
    }

    #[test]
    fn bare_and_decorated_labels_parse() {
        for reply in ["sport", " Sport.\n", "\"sport\"", "The label is: sport", r#"{"label":"sport"}"#] {
            assert_eq!(parse_reply(&labels(), reply).unwrap().label.as_deref(), Some("sport"));
        }
    }

    #[test]
    fn served_answers_keep_their_confidence() {
        let reply = r#"{"label":"tech","scores":[{"label":"tech","score":0.7}],"confidence":0.7}"#;
        let a = parse_reply(&labels(), reply).unwrap();
        assert_eq!((a.label.as_deref(), a.confidence), (Some("tech"), 0.7));
    }

    #[test]
    fn ambiguous_or_unknown_replies_are_errors() {
        for reply in ["", "weather", "sport or tech", r#"{"label":"weather"}"#] {
            let e = parse_reply(&labels(), reply).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::BadReply, "{reply}");
        }
    }

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0], 1.0);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
