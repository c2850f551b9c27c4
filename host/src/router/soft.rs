//! Soft labels from a chat model's token log-probabilities.
//!
//! A chat model asked for "exactly one label" writes the label's first token
//! first, so the distribution of that token over the labels is the model's
//! distribution over the answer. With OpenAI-compatible `top_logprobs`, each
//! returned token that starts exactly one label (case and surrounding
//! spaces, quotes and punctuation aside) adds its probability to that label;
//! a token that fits several labels, or none, is ignored. The result is
//! normalised over the labels. When the label the reply names gets no mass,
//! the logprobs did not describe this answer and the hard label is kept.

use crate::cloud::TokenLogprob;
use edgecascade_abi::{Answer, Score};

/// `answer` with its scores replaced by the distribution that `logprobs`
/// give over `labels`, and its confidence by its label's share of it. Returns
/// the answer unchanged when the logprobs say nothing about its label.
pub fn with_logprobs(mut answer: Answer, labels: &[String], logprobs: &[TokenLogprob]) -> Answer {
    let Some(label) = answer.label.as_deref() else { return answer };
    let lower: Vec<String> = labels.iter().map(|l| l.to_lowercase()).collect();
    let mut mass = vec![0f64; labels.len()];
    for t in logprobs {
        let token = t.token.trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation()).to_lowercase();
        if token.is_empty() {
            continue;
        }
        let mut fits = lower.iter().enumerate().filter(|(_, l)| l.starts_with(&token));
        if let (Some((i, _)), None) = (fits.next(), fits.next()) {
            mass[i] += f64::from(t.logprob).exp();
        }
    }
    let total: f64 = mass.iter().sum();
    let Some(at) = labels.iter().position(|l| l == label) else { return answer };
    if total <= 0.0 || mass[at] <= 0.0 {
        return answer;
    }
    let mut scores: Vec<Score> =
        labels.iter().zip(&mass).map(|(label, m)| Score { label: label.clone(), score: (m / total) as f32 }).collect();
    scores.sort_by(|a, b| b.score.total_cmp(&a.score));
    answer.confidence = (mass[at] / total).clamp(0.0, 1.0) as f32;
    answer.scores = scores;
    answer
}

/// Whether an answer carries a distribution (scores for two or more labels)
/// rather than a bare label.
pub fn is_soft(answer: &Answer) -> bool {
    answer.scores.len() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["negative", "neutral", "positive"].map(String::from).to_vec()
    }

    fn hard(label: &str) -> Answer {
        Answer {
            label: Some(label.into()),
            scores: vec![Score { label: label.into(), score: 1.0 }],
            confidence: 1.0,
            tensors: vec![],
        }
    }

    fn lp(token: &str, p: f32) -> TokenLogprob {
        TokenLogprob { token: token.into(), logprob: p.ln() }
    }

    #[test]
    fn first_tokens_become_a_distribution_over_the_labels() {
        // "neg" and " Negative" both start "negative"; "ne" fits two labels and is ignored.
        let tops = [lp("neg", 0.5), lp(" Negative", 0.1), lp("ne", 0.2), lp("\"positive", 0.2), lp("the", 0.05)];
        let a = with_logprobs(hard("negative"), &labels(), &tops);
        assert!(is_soft(&a));
        assert_eq!(a.label.as_deref(), Some("negative"));
        assert!((a.confidence - 0.75).abs() < 1e-6, "{}", a.confidence);
        let scores: Vec<(&str, f32)> = a.scores.iter().map(|s| (s.label.as_str(), s.score)).collect();
        assert_eq!(scores[0].0, "negative");
        assert!((scores[1].1 - 0.25).abs() < 1e-6 && scores[1].0 == "positive");
        assert_eq!(scores[2], ("neutral", 0.0));
    }

    #[test]
    fn logprobs_that_miss_the_answer_leave_it_hard() {
        for tops in [vec![], vec![lp("positive", 0.9)], vec![lp("maybe", 0.9)]] {
            let a = with_logprobs(hard("negative"), &labels(), &tops);
            assert_eq!(a, hard("negative"));
            assert!(!is_soft(&a));
        }
    }
}
