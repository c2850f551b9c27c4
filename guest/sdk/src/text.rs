//! BERT-style text tokenization: the uncased basic tokenizer and WordPiece,
//! matching Hugging Face `tokenizers`' `BertNormalizer` + `BertPreTokenizer` +
//! `WordPiece` (as configured for all-MiniLM-L6-v2). `models/golden/tokenize.jsonl`
//! pins the behaviour.

use crate::Error;
// foldhash rather than SipHash: the lookups are the tokenizer's inner loop, the
// keys are only looked up (never inserted from requests), and tract already
// links foldhash through hashbrown.
use foldhash::HashMap;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// The longest word WordPiece splits; longer words become `[UNK]`.
const MAX_WORD_CHARS: usize = 100;

/// BERT's special tokens. Like Hugging Face's added tokens, they are matched
/// in the raw text (case-sensitive, before normalization) and map to their ids.
const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// What one pass of [`WordPiece::analyze`] finds in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Token ids, without special tokens.
    pub ids: Vec<i64>,
    /// Words the vocabulary holds whole.
    pub whole_words: usize,
    /// Words (pieces with a letter or digit).
    pub words: usize,
}

/// A WordPiece vocabulary and tokenizer.
pub struct WordPiece {
    /// Whole-word pieces: "bank" -> id.
    words: HashMap<String, u32>,
    /// Continuation pieces without their "##": "ing" -> id of "##ing".
    continuations: HashMap<String, u32>,
    unk: u32,
    cls: Option<u32>,
    sep: Option<u32>,
    specials: Vec<(&'static str, u32)>,
}

impl WordPiece {
    /// Reads a `vocab.txt`: one token per line, the line number is the id.
    pub fn from_vocab(vocab: &str) -> Result<WordPiece, Error> {
        let mut words = HashMap::default();
        let mut continuations = HashMap::default();
        for (id, token) in vocab.lines().enumerate() {
            let id = id as u32;
            match token.strip_prefix("##") {
                Some(rest) if !rest.is_empty() => continuations.insert(rest.to_string(), id),
                _ => words.insert(token.to_string(), id),
            };
        }
        let unk = *words.get("[UNK]").ok_or_else(|| Error::bad_input("vocab has no [UNK]"))?;
        let cls = words.get("[CLS]").copied();
        let sep = words.get("[SEP]").copied();
        let specials = SPECIAL_TOKENS.iter().filter_map(|t| words.get(*t).map(|&id| (*t, id))).collect();
        Ok(WordPiece { words, continuations, unk, cls, sep, specials })
    }

    /// Counts `text`'s words (pieces with a letter or digit, after basic
    /// tokenization) and how many of them are whole vocabulary words rather
    /// than spelled out in `##` pieces. Gibberish and foreign scripts score low.
    pub fn word_stats(&self, text: &str) -> (usize, usize) {
        let a = self.analyze(text, usize::MAX);
        (a.whole_words, a.words)
    }

    /// The id of `[CLS]`, if the vocabulary has one.
    pub fn cls(&self) -> Option<u32> {
        self.cls
    }

    /// The id of `[SEP]`, if the vocabulary has one.
    pub fn sep(&self) -> Option<u32> {
        self.sep
    }

    /// Token ids of `text`, without special tokens, at most `max` of them.
    pub fn encode(&self, text: &str, max: usize) -> Vec<i64> {
        self.analyze(text, max).ids
    }

    /// Token ids (at most `max`) and word counts in one pass over `text`:
    /// normalization is the costly part, so it is done once for both.
    /// Words are counted up to where the ids stop.
    pub fn analyze(&self, text: &str, max: usize) -> Analysis {
        let mut a = Analysis { ids: Vec::new(), whole_words: 0, words: 0 };
        let mut rest = text;
        while !rest.is_empty() && a.ids.len() < max {
            let next = self.next_special(rest);
            let (plain, special) = match next {
                Some((at, len, id)) => (&rest[..at], Some((id, at + len))),
                None => (rest, None),
            };
            let normalized = normalize(plain);
            for word in pre_tokenize(&normalized) {
                if a.ids.len() >= max {
                    break;
                }
                if word.chars().any(char::is_alphanumeric) {
                    a.words += 1;
                    a.whole_words += self.words.contains_key(word) as usize;
                }
                self.word_pieces(word, &mut a.ids);
            }
            match special {
                Some((id, end)) => {
                    a.ids.push(id as i64);
                    rest = &rest[end..];
                }
                None => rest = "",
            }
        }
        a.ids.truncate(max);
        a
    }

    /// The first special token in raw `text`, as (offset, length, id). Every
    /// special token starts with '[', and none is a prefix of another.
    fn next_special(&self, text: &str) -> Option<(usize, usize, u32)> {
        text.match_indices('[').find_map(|(at, _)| {
            self.specials.iter().find(|(t, _)| text[at..].starts_with(t)).map(|&(t, id)| (at, t.len(), id))
        })
    }

    /// Greedy longest-match-first WordPiece of one word.
    fn word_pieces(&self, word: &str, ids: &mut Vec<i64>) {
        if word.chars().count() > MAX_WORD_CHARS {
            ids.push(self.unk as i64);
            return;
        }
        let start_len = ids.len();
        let mut start = 0;
        while start < word.len() {
            let table = if start == 0 { &self.words } else { &self.continuations };
            let mut end = word.len();
            let mut found = None;
            while end > start {
                if let Some(&id) = table.get(&word[start..end]) {
                    found = Some(id);
                    break;
                }
                end = prev_boundary(word, end);
            }
            match found {
                Some(id) => {
                    ids.push(id as i64);
                    start = end;
                }
                None => {
                    ids.truncate(start_len);
                    ids.push(self.unk as i64);
                    return;
                }
            }
        }
    }
}

fn prev_boundary(s: &str, mut i: usize) -> usize {
    i -= 1;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// BertNormalizer: clean text, space out CJK, strip accents, lowercase.
///
/// Why in chunks: the Unicode path (category lookups, NFD, context-sensitive
/// lowercasing) cost 70% of the tokenizer's time on English text. An ASCII
/// space, tab or newline ends every context it needs: NFD reorders only runs
/// of combining marks, and final-sigma lowercasing looks only across cased and
/// case-ignorable letters. So each chunk up to one of those that is ASCII
/// takes a byte-wise path with the same result; only the others take the
/// Unicode path.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find([' ', '\t', '\n', '\r']).map_or(rest.len(), |at| at + 1);
        let (chunk, tail) = rest.split_at(end);
        if chunk.is_ascii() {
            normalize_ascii(chunk, &mut out);
        } else {
            normalize_unicode(chunk, &mut out);
        }
        rest = tail;
    }
    out
}

/// [`normalize`] for ASCII text: controls other than tab, newline and carriage
/// return go, whitespace becomes ' ', letters are lowercased.
fn normalize_ascii(text: &str, out: &mut String) {
    for b in text.bytes() {
        match b {
            b'\t' | b'\n' | b'\r' | b' ' => out.push(' '),
            0..=0x1f | 0x7f => {}
            _ => out.push(b.to_ascii_lowercase() as char),
        }
    }
}

fn normalize_unicode(text: &str, out: &mut String) {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_chinese(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    let stripped: String = cleaned.nfd().filter(|c| c.general_category() != GeneralCategory::NonspacingMark).collect();
    out.push_str(&stripped.to_lowercase());
}

/// BertPreTokenizer: split on whitespace (dropped) and punctuation (kept, alone).
fn pre_tokenize(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(char::is_whitespace);
        let first = rest.chars().next()?;
        let end = if is_punctuation(first) {
            first.len_utf8()
        } else {
            rest.find(|c: char| c.is_whitespace() || is_punctuation(c)).unwrap_or(rest.len())
        };
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Unassigned
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
    )
}

fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    c.general_category_group() == GeneralCategoryGroup::Punctuation
}

fn is_chinese(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// A text classifier over WordPiece ids, in one of two shapes:
///
/// - **small**: one model `model` taking `input_ids` `[1, n]` (no special
///   tokens) and returning `probs` `[1, labels]`;
/// - **large**: an `encoder` taking `input_ids`, `attention_mask` and
///   `token_type_ids` (with `[CLS]`/`[SEP]`) and returning an embedding, then a
///   `head` taking the embedding and returning `probs`.
///
/// The manifest picks the shape by which models it lists; the asset `vocab`
/// is the WordPiece vocabulary, and `[config] max_tokens` caps the input.
#[cfg(any(feature = "onnx", feature = "wasi-nn"))]
pub struct TextClassifier {
    tokenizer: WordPiece,
    labels: Vec<String>,
    max_tokens: usize,
    /// The last text analyzed: the host calls `beyond` and then `infer` on the
    /// same input, and tokenizing a long text costs more than the small model.
    last: std::cell::RefCell<Option<(String, std::rc::Rc<Analysis>)>>,
    models: Models,
}

#[cfg(any(feature = "onnx", feature = "wasi-nn"))]
enum Models {
    Small(crate::model::Model),
    Large { encoder: crate::model::Model, head: crate::model::Model },
}

#[cfg(any(feature = "onnx", feature = "wasi-nn"))]
impl TextClassifier {
    /// Loads the vocabulary and the model(s) named in the manifest.
    pub fn load(ctx: &crate::LoadContext<'_>) -> Result<TextClassifier, Error> {
        use crate::model::Model;
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(default = "default_max_tokens")]
            max_tokens: usize,
        }
        fn default_max_tokens() -> usize {
            128
        }
        let config: Config =
            if ctx.config().is_null() { Config { max_tokens: default_max_tokens() } } else { ctx.config_as()? };
        let tokenizer = WordPiece::from_vocab(ctx.asset_str("vocab")?)?;
        let models = if ctx.has_model("encoder") {
            Models::Large { encoder: Model::load(ctx, "encoder")?, head: Model::load(ctx, "head")? }
        } else {
            Models::Small(Model::load(ctx, "model")?)
        };
        if ctx.labels().is_empty() {
            return Err(Error::bad_input("a classifier needs labels in its manifest"));
        }
        Ok(TextClassifier {
            tokenizer,
            labels: ctx.labels().to_vec(),
            max_tokens: config.max_tokens.max(3),
            last: std::cell::RefCell::new(None),
            models,
        })
    }

    /// The labels, in model output order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &WordPiece {
        &self.tokenizer
    }

    /// How many of `text`'s words the vocabulary knows whole, out of how many
    /// words: see [`WordPiece::word_stats`].
    pub fn recognised_words(&self, text: &str) -> (usize, usize) {
        let a = self.analysis(text);
        (a.whole_words, a.words)
    }

    /// The analysis of `text` at the model's token budget, reused for the same text.
    fn analysis(&self, text: &str) -> std::rc::Rc<Analysis> {
        if let Some((last, a)) = &*self.last.borrow()
            && last == text
        {
            return a.clone();
        }
        // The large model needs room for [CLS] and [SEP].
        let cap = if matches!(self.models, Models::Large { .. }) { self.max_tokens - 2 } else { self.max_tokens };
        let a = std::rc::Rc::new(self.tokenizer.analyze(text, cap));
        *self.last.borrow_mut() = Some((text.to_string(), a.clone()));
        a
    }

    /// Classifies `text`.
    pub fn classify(&mut self, text: &str) -> Result<crate::Answer, Error> {
        use crate::model::Tensor;
        let analysis = self.analysis(text);
        let probs = match &mut self.models {
            Models::Small(model) => {
                let mut ids = analysis.ids.clone();
                if ids.is_empty() {
                    ids.push(self.tokenizer.unk as i64);
                }
                model.run_f32(&[Tensor::I64 { shape: &[1, ids.len()], values: &ids }])?
            }
            Models::Large { encoder, head } => {
                let (cls, sep) = match (self.tokenizer.cls, self.tokenizer.sep) {
                    (Some(c), Some(s)) => (c as i64, s as i64),
                    _ => return Err(Error::bad_input("vocab has no [CLS]/[SEP]")),
                };
                let mut ids = vec![cls];
                ids.extend_from_slice(&analysis.ids);
                ids.push(sep);
                let mask = vec![1i64; ids.len()];
                let types = vec![0i64; ids.len()];
                let shape = [1, ids.len()];
                let embedding = encoder.run_f32(&[
                    Tensor::I64 { shape: &shape, values: &ids },
                    Tensor::I64 { shape: &shape, values: &mask },
                    Tensor::I64 { shape: &shape, values: &types },
                ])?;
                head.run_f32(&[Tensor::F32 { shape: &[1, embedding.len()], values: &embedding }])?
            }
        };
        crate::classify::answer(&self.labels, &probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> WordPiece {
        let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\nbank\n##ing\nrate\n##s\n,\n.\ncafe\n中\nun\n##aff\n##able";
        WordPiece::from_vocab(vocab).unwrap()
    }

    #[test]
    fn splits_words_punctuation_and_pieces() {
        let wp = tiny();
        assert_eq!(wp.encode("The bank, banking rates.", 100), vec![4, 5, 9, 5, 6, 7, 8, 10]);
    }

    #[test]
    fn strips_accents_and_spaces_cjk() {
        let wp = tiny();
        assert_eq!(wp.encode("Café中", 100), vec![11, 12]);
    }

    #[test]
    fn unknown_pieces_make_the_whole_word_unk() {
        let wp = tiny();
        assert_eq!(wp.encode("unaffable unaffx", 100), vec![13, 14, 15, 1]);
    }

    #[test]
    fn word_stats_tell_words_from_gibberish() {
        let wp = tiny();
        assert_eq!(wp.word_stats("The bank, rates."), (2, 3));
        assert_eq!(wp.word_stats("unaffable ?!"), (0, 1));
    }

    #[test]
    fn truncates_to_max() {
        assert_eq!(tiny().encode("the the the", 2).len(), 2);
    }

    /// The ASCII fast path must agree with the Unicode path wherever the two
    /// meet: final sigma, combining marks and controls beside whitespace.
    #[test]
    fn the_ascii_fast_path_changes_nothing() {
        fn unicode_only(text: &str) -> String {
            let mut out = String::new();
            normalize_unicode(text, &mut out);
            out
        }
        let cases = [
            "ΟΔΟΣ a",
            "ΟΔΟΣ\u{85}a",
            "ΟΔΟΣ\u{a0}b",
            "ΑΣ\u{200d}a",
            "e\u{301} \u{301}x",
            "A\u{b}B\u{c}C\u{7f}D\u{0}E",
            "İstanbul ǅ x",
            "tab\there\r\nnew",
            "中文 text 中",
            "\u{fffd}ok  ",
            "café\u{2028}CAFÉ",
        ];
        for case in cases {
            assert_eq!(normalize(case), unicode_only(case), "{case:?}");
        }
        // Every mix of pieces that sit at the edges of the fast path, up to four long.
        let pieces = ["Σ", "a", "B", " ", "\t", "\u{301}", "\u{85}", "\u{200d}", "中", "\u{1}", "é", ".", "\u{a0}"];
        let n = pieces.len();
        for i in 0..n.pow(4) {
            let text: String = (0..4).map(|d| pieces[i / n.pow(d) % n]).collect();
            assert_eq!(normalize(&text), unicode_only(&text), "{text:?}");
        }
    }

    #[test]
    fn matches_the_hugging_face_golden_file() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models");
        let (Ok(vocab), Ok(golden)) = (
            std::fs::read_to_string(format!("{root}/vocab.txt")),
            std::fs::read_to_string(format!("{root}/golden/tokenize.jsonl")),
        ) else {
            panic!("models/vocab.txt and models/golden/tokenize.jsonl are committed files");
        };
        let wp = WordPiece::from_vocab(&vocab).unwrap();
        let mut checked = 0;
        for line in golden.lines().filter(|l| !l.trim().is_empty()) {
            #[derive(serde::Deserialize)]
            struct Case {
                text: String,
                ids: Vec<i64>,
            }
            let case: Case = serde_json::from_str(line).unwrap();
            assert_eq!(wp.encode(&case.text, usize::MAX), case.ids, "text: {:?}", case.text);
            checked += 1;
        }
        assert!(checked >= 100, "only {checked} golden cases");
    }
}
