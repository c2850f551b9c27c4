/*
 * keywords: an edgecascade plugin in C, written against the guest ABI v1
 * (guest/ABI.md) without the Rust SDK. It shows what a plugin in any language
 * that targets WASI must do: export the ABI's functions, own the buffers the
 * host fills, and answer with result frames of JSON.
 *
 * It labels English text "negative" or "positive" by counting keywords, says
 * "beyond" when it finds none, phrases the task for a large model, and reads
 * the large model's reply (a bare label, or an edgecascade tier's JSON answer).
 *
 * Build (Debian: apt-get install clang-14 lld-14 wasi-libc
 *   libclang-rt-14-dev-wasm32; `cargo xtask plugins` does it):
 *   clang-14 --target=wasm32-wasi -O2 -mexec-model=reactor -I../include -o keywords.wasm keywords.c
 * `-mexec-model=reactor` links wasi-libc's reactor start, whose `_initialize`
 * runs the constructors once, as the ABI asks.
 */
#include <strings.h>

#include "edgecascade_frame.h"

enum { LABELS = 2, MAX_WORD = 32 };

static const char *const labels[LABELS] = {"negative", "positive"};
static const char *const keywords[LABELS][7] = {
    {"bad", "awful", "broken", "slow", "refund", "hate", NULL},
    {"good", "great", "love", "fast", "perfect", "thanks", NULL},
};

static int loaded;

EXPORT("edgecascade_abi_version") int32_t abi_version(void) { return 1; }
EXPORT("edgecascade_abi_minor") int32_t abi_minor(void) { return 1; }

/* This plugin has no model or assets: the load frame is read for nothing but consent. */
EXPORT("edgecascade_load") int64_t load(int32_t ptr, int32_t len) {
    (void)len;
    free((void *)(uintptr_t)ptr);
    loaded = 1;
    begin(OK);
    put_str("{}");
    return finish();
}

/* Counts, per label, the words of text[0..n) that vote for it. */
static int votes(const char *text, size_t n, int counts[LABELS]) {
    int total = 0;
    char word[MAX_WORD + 1];
    size_t w = 0;
    memset(counts, 0, sizeof(int) * LABELS);
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? text[i] : ' ';
        int letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (letter) {
            if (w < MAX_WORD) word[w++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            continue;
        }
        word[w] = 0;
        for (int l = 0; w && l < LABELS; l++)
            for (int k = 0; keywords[l][k]; k++)
                if (strcmp(word, keywords[l][k]) == 0) { counts[l]++; total++; }
        w = 0;
    }
    return total;
}

/* Splits an input frame ("content-type\npayload"); 0 unless it is text/plain. */
static int text_input(const char *frame, size_t len, const char **text, size_t *n) {
    const char *newline = memchr(frame, '\n', len);
    if (!newline) return 0;
    size_t type_len = (size_t)(newline - frame);
    if (type_len != 10 || memcmp(frame, "text/plain", 10) != 0) return 0;
    *text = newline + 1;
    *n = len - type_len - 1;
    return 1;
}

/* An answer: the label, its scores highest first, and the confidence. */
static int64_t answer(const float probs[LABELS]) {
    int best = probs[1] > probs[0] ? 1 : 0;
    char number[32];
    begin(OK);
    put_str("{\"label\":\"");
    put_str(labels[best]);
    put_str("\",\"scores\":[");
    for (int i = 0; i < LABELS; i++) {
        int l = i == 0 ? best : 1 - best;
        snprintf(number, sizeof number, "%.6f", probs[l]);
        put_str(i ? ",{\"label\":\"" : "{\"label\":\"");
        put_str(labels[l]);
        put_str("\",\"score\":");
        put_str(number);
        put_str("}");
    }
    snprintf(number, sizeof number, "%.6f", probs[best]);
    put_str("],\"confidence\":");
    put_str(number);
    put_str("}");
    return finish();
}

EXPORT("edgecascade_infer") int64_t infer(int32_t ptr, int32_t len) {
    char *frame = (char *)(uintptr_t)ptr;
    const char *text;
    size_t n;
    int64_t result;
    int counts[LABELS];
    if (!loaded) result = error("not_loaded", "call load first");
    else if (!text_input(frame, (size_t)len, &text, &n)) result = error("bad_input", "expected text/plain");
    else {
        int total = votes(text, n, counts);
        if (total == 0) {
            begin(BEYOND);
            put_str("{\"reason\":\"no keyword of any label\"}");
            result = finish();
        } else {
            float probs[LABELS] = {(float)counts[0] / total, (float)counts[1] / total};
            result = answer(probs);
        }
    }
    free(frame);
    return result;
}

EXPORT("edgecascade_prompt") int64_t prompt(int32_t ptr, int32_t len) {
    char *frame = (char *)(uintptr_t)ptr;
    const char *text;
    size_t n;
    int64_t result;
    if (!text_input(frame, (size_t)len, &text, &n)) result = error("bad_input", "expected text/plain");
    else {
        begin(OK);
        put_str("{\"messages\":[{\"role\":\"system\",\"content\":\"You are a careful classifier. Classify the "
                "sentiment of this text. Reply with exactly one label from this list and nothing else: "
                "negative, positive.\"},{\"role\":\"user\",\"content\":");
        put_json(text, n);
        put_str("}],\"max_tokens\":16}");
        result = finish();
    }
    free(frame);
    return result;
}

/* The large model's reply: a JSON answer's "label" (the tier convention), else the one label it names. */
EXPORT("edgecascade_parse_reply") int64_t parse_reply(int32_t ptr, int32_t len) {
    char *reply = (char *)(uintptr_t)ptr;
    size_t n = (size_t)len;
    int found = -1, several = 0;
    const char *key = n ? memchr(reply, '{', 1) : NULL;
    const char *start = reply, *end = reply + n;
    if (key) {
        /* {"label":"x", ...}: look only at the label's value. */
        for (const char *p = reply; p + 9 <= end; p++)
            if (memcmp(p, "\"label\":\"", 9) == 0) {
                start = p + 9;
                const char *quote = memchr(start, '"', (size_t)(end - start));
                end = quote ? quote : end;
                break;
            }
    }
    for (int l = 0; l < LABELS; l++) {
        size_t k = strlen(labels[l]);
        for (const char *p = start; p + k <= end; p++) {
            int before = p == start || !((p[-1] | 32) >= 'a' && (p[-1] | 32) <= 'z');
            int after = p + k == end || !((p[k] | 32) >= 'a' && (p[k] | 32) <= 'z');
            if (before && after && strncasecmp(p, labels[l], k) == 0) {
                if (found >= 0 && found != l) several = 1;
                found = l;
                break;
            }
        }
    }
    int64_t result;
    if (found < 0 || several) result = error("bad_reply", several ? "several labels in the reply" : "no label in the reply");
    else {
        float probs[LABELS];
        probs[found] = 1.0f;
        probs[1 - found] = 0.0f;
        result = answer(probs);
    }
    free(reply);
    return result;
}
