//! sentiment: the sentiment of a short social-media post (negative, neutral, positive).
//!
//! The small package runs a distilled int8 model (`model`); the large one runs
//! MiniLM (`encoder`) and a head (`head`). Both ship this same module.

use edgecascade_guest::text::TextClassifier;
use edgecascade_guest::{Answer, Error, Input, LoadContext, Plugin, Prompt, classify, export_plugin};

/// Posts are short; a longer text is another kind of input than the model learned.
const MAX_CHARS: usize = 1_000;

struct Sentiment {
    classifier: TextClassifier,
}

impl Plugin for Sentiment {
    fn load(ctx: &LoadContext<'_>) -> Result<Self, Error> {
        Ok(Sentiment { classifier: TextClassifier::load(ctx)? })
    }

    fn beyond(&self, input: &Input<'_>) -> Option<String> {
        let text = input.text().ok()?;
        let chars = text.chars().count();
        if chars > MAX_CHARS {
            return Some(format!("{chars} characters: longer than a post ({MAX_CHARS} at most)"));
        }
        let (known, _) = self.classifier.recognised_words(text);
        (known == 0).then(|| "no recognised words".to_string())
    }

    fn infer(&mut self, input: &Input<'_>) -> Result<Answer, Error> {
        self.classifier.classify(input.text()?)
    }

    fn prompt(&self, input: &Input<'_>) -> Result<Prompt, Error> {
        let task = "Classify the sentiment of this tweet.";
        Ok(classify::prompt(task, self.classifier.labels(), input.text()?))
    }

    fn parse_reply(&self, reply: &str) -> Result<Answer, Error> {
        classify::parse_reply(self.classifier.labels(), reply)
    }
}

export_plugin!(Sentiment);
