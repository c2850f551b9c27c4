//! news-topic: classifies English news text into the five BBC News topics.
//!
//! The small package runs a distilled int8 model (`model`); the large one runs
//! MiniLM (`encoder`) and a head (`head`). Both ship this same module.

use edgecascade_guest::text::TextClassifier;
use edgecascade_guest::{Answer, Error, Input, LoadContext, Plugin, Prompt, classify, export_plugin};

/// Fewer recognised words than this and the model is guessing.
const MIN_KNOWN_WORDS: usize = 3;

struct NewsTopic {
    classifier: TextClassifier,
}

impl Plugin for NewsTopic {
    fn load(ctx: &LoadContext<'_>) -> Result<Self, Error> {
        Ok(NewsTopic { classifier: TextClassifier::load(ctx)? })
    }

    fn beyond(&self, input: &Input<'_>) -> Option<String> {
        let text = input.text().ok()?;
        let (known, total) = self.classifier.recognised_words(text);
        if known < MIN_KNOWN_WORDS {
            return Some(format!("only {known} recognised words: too little text to judge"));
        }
        if known * 2 < total {
            return Some(format!("{known} of {total} words recognised: probably not English"));
        }
        None
    }

    fn infer(&mut self, input: &Input<'_>) -> Result<Answer, Error> {
        self.classifier.classify(input.text()?)
    }

    fn prompt(&self, input: &Input<'_>) -> Result<Prompt, Error> {
        let task = "Classify the topic of this news article.";
        Ok(classify::prompt(task, self.classifier.labels(), input.text()?))
    }

    fn parse_reply(&self, reply: &str) -> Result<Answer, Error> {
        classify::parse_reply(self.classifier.labels(), reply)
    }
}

export_plugin!(NewsTopic);
