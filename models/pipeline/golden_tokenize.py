"""Stage 2: models/vocab.txt (MiniLM's WordPiece vocab) and models/golden/tokenize.jsonl.

The golden ids come from the HF `tokenizers` library loading the package's tokenizer.json, with
add_special_tokens=False, no truncation and no padding.
"""
from __future__ import annotations

import numpy as np

from common import GOLDEN, MODELS, SEED, encode, load_split, minilm_dir, write_jsonl

EDGE_CASES = [
    "",
    " ",
    "   \t\n  ",
    "Hello, World!",
    "HELLO WORLD THIS IS ALL UPPERCASE",
    "MiXeD CaSe WoRdS",
    "Café déjà vu, naïve façade, résumé, Ångström, crème brûlée",
    "ÀÉÎÕÜ àéîõü ñÑ çÇ øØ æÆ œŒ ß",
    "e\u0301 combining acute, a\u0308 combining diaeresis",
    "İstanbul and ıstanbul",
    "Straße, Ärger, Öl, Übermut",
    "ﬁne ﬂour (ligatures)",
    "我爱北京天安门",
    "中文和English混合text",
    "日本語のテキスト、カタカナ、ひらがな。",
    "안녕하세요 세계",
    "Ελληνικά κείμενα",
    "Русский текст, Москва",
    "نص عربي",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "I love it 😍🔥👍",
    "😀",
    "emoji😀glued😀together",
    "👨‍👩‍👧‍👦 family emoji with zero width joiners",
    "flags 🇬🇧🇺🇸",
    "https://www.bbc.co.uk/news/business-12345678?ref=rss&utm_source=x#top",
    "http://t.co/qgqe2JoYMD via @sharethis #Autonomous",
    "mail me at someone.else@example.com!",
    "@united @AmericanAir #DeflateGate #SXSW2015 RT: lol",
    "!!!???...,,,;;;:::",
    "\"quoted\" 'single' `back` «guillemets» „low“ —dash– …",
    "don't won't can't it's I'm you're they've",
    "U.S.A. e.g. i.e. Mr. Dr. St.",
    "3.14159 1,000,000 $1.13bn £600m 76% 2004-05 10:30pm",
    "a" * 99,
    "a" * 100,
    "a" * 101,
    "b" * 250,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 99 + " " + "y" * 101,
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003emspace",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom",
    "control\x00chars\x01\x07\x1b here",
    "soft\u00adhyphen",
    "fullwidth ＡＢＣ １２３",
    "math ∑ ∫ √ ∞ ≠ ≤ ≥ ± × ÷",
    "currency € ¥ ₹ ₩ ₿ ¢",
    "[CLS] literal special tokens [SEP] in text [MASK] [PAD] [UNK]",
    "[cls] lowercase is not special",
    "[MASK]ed glued special token",
    "##hash ## prefix ##",
    "<html><body>tags &amp; entities &lt;</body></html>",
    "C++ C# F# .NET node.js",
    "snake_case_identifier camelCaseIdentifier kebab-case-identifier",
    "repeated letters sooooooo goooood!!!!!!",
    "Õ¢_\x8aÎ\x81Ð@mashable: mojibake from latin-1 decoding",
    "_\x99ê_ more mojibake",
    "tweet with trailing url http://t.co/2DvRxQrsad",
    "123456789012345678901234567890",
    "A",
    "a b c d e f g",
    ".",
    "unaffable",
    "the quick brown fox jumps over the lazy dog",
]


def run() -> int:
    vocab_src = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8")
    (MODELS / "vocab.txt").write_text(vocab_src, encoding="utf-8", newline="\n")
    n_vocab = len(vocab_src.splitlines())
    assert n_vocab == 30522, n_vocab

    rng = np.random.default_rng(SEED)
    texts = list(EDGE_CASES)
    news = load_split("news", "train")
    for i in rng.choice(len(news), 10, replace=False):  # 10 whole articles
        texts.append(news[int(i)]["text"])
    for i in rng.choice(len(news), 60, replace=False):  # 60 first paragraphs
        texts.append(news[int(i)]["text"].split("\n\n")[0])
    tweets = load_split("sentiment", "train")
    for i in rng.choice(len(tweets), 165, replace=False):
        texts.append(tweets[int(i)]["text"])
    ids = encode(texts)
    write_jsonl(GOLDEN / "tokenize.jsonl", [{"text": t, "ids": i} for t, i in zip(texts, ids)])
    print(f"[tokenize] vocab.txt {n_vocab} tokens; golden/tokenize.jsonl {len(texts)} texts")
    return len(texts)


if __name__ == "__main__":
    run()
