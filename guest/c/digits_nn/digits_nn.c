/*
 * digits_nn: an edgecascade plugin in C whose model runs in the host's shared
 * runtime through wasi-nn (guest/ABI.md, "The shared runtime"). No tract, no
 * SDK: the ABI's exports, plus wasi-nn's witx imports, which a C program for
 * wasmtime's or WasmEdge's wasi-nn would use alike.
 *
 * It recognises a handwritten digit in an 8x8 image, like the Rust `digits`
 * plugin, with the same model: input JSON `[64 numbers]` or
 * `{"pixels": [64 numbers]}`, each 0 (blank) to 16 (ink).
 *
 * Build: clang-14 --target=wasm32-wasi -O2 -mexec-model=reactor -I../include -o digits_nn.wasm digits_nn.c
 */
#include "edgecascade_frame.h"

#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

/* wasi-nn, the witx form (module wasi_ephemeral_nn). Each call returns an nn_errno. */
typedef struct { const uint32_t *dims; uint32_t rank; uint8_t type; const void *data; uint32_t len; } nn_tensor;
enum { NN_F32 = 1 };
IMPORT("wasi_ephemeral_nn", "load_by_name") uint32_t nn_load_by_name(const char *name, uint32_t len, uint32_t *graph);
IMPORT("wasi_ephemeral_nn", "init_execution_context") uint32_t nn_init_execution_context(uint32_t graph, uint32_t *ctx);
IMPORT("wasi_ephemeral_nn", "set_input") uint32_t nn_set_input(uint32_t ctx, uint32_t index, const nn_tensor *tensor);
IMPORT("wasi_ephemeral_nn", "compute") uint32_t nn_compute(uint32_t ctx);
IMPORT("wasi_ephemeral_nn", "get_output")
uint32_t nn_get_output(uint32_t ctx, uint32_t index, void *out, uint32_t max, uint32_t *written);
/* The runtime's words about the last failed call (edgecascade's, beside wasi-nn). */
IMPORT("edgecascade", "nn_last_error") uint32_t nn_last_error(char *out, uint32_t max);

enum { PIXELS = 64, DIGITS = 10 };

static int loaded;
static uint32_t context;

/* A `model` error naming the wasi-nn call, its code and the runtime's reason. */
static int64_t nn_error(const char *call, uint32_t errno_) {
    char reason[512], message[640];
    uint32_t n = nn_last_error(reason, sizeof reason - 1);
    reason[n < sizeof reason - 1 ? n : sizeof reason - 1] = 0;
    snprintf(message, sizeof message, "wasi-nn %s: error %u: %s", call, (unsigned)errno_, reason);
    return error("model", message);
}

EXPORT("edgecascade_abi_version") int32_t abi_version(void) { return 1; }
EXPORT("edgecascade_abi_minor") int32_t abi_minor(void) { return 2; }

/* The model is the manifest's "model": the host has it loaded by the runtime. */
EXPORT("edgecascade_load") int64_t load(int32_t ptr, int32_t len) {
    (void)len;
    free((void *)(uintptr_t)ptr);
    uint32_t graph, e;
    if ((e = nn_load_by_name("model", 5, &graph))) return nn_error("load_by_name", e);
    if ((e = nn_init_execution_context(graph, &context))) return nn_error("init_execution_context", e);
    loaded = 1;
    begin(OK);
    put_str("{}");
    return finish();
}

/* Reads the 64 pixels of a JSON input frame; 0 with a message on a bad one. */
static int pixels(const char *frame, size_t len, float image[PIXELS], const char **why) {
    const char *newline = memchr(frame, '\n', len);
    if (!newline || (size_t)(newline - frame) != 16 || memcmp(frame, "application/json", 16) != 0) {
        *why = "expected application/json";
        return 0;
    }
    /* A NUL-terminated copy for strtof. */
    size_t n = len - 17;
    char *json = malloc(n + 1);
    if (!json) { *why = "out of memory"; return 0; }
    memcpy(json, newline + 1, n);
    json[n] = 0;
    char *p = strchr(json, '[');
    int count = 0, ok = p != NULL;
    while (ok && count < PIXELS) {
        char *end;
        p++;
        float v = strtof(p, &end);
        if (end == p) { ok = 0; break; }
        if (!(v >= 0.0f && v <= 16.0f)) { *why = "a pixel value is outside 0..=16"; free(json); return 0; }
        image[count++] = v;
        p = end;
        while (*p == ' ' || *p == '\n' || *p == '\t') p++;
        if (*p != ',') break;
    }
    int closed = ok && p && *p == ']';
    free(json);
    if (!ok || count != PIXELS || !closed) { *why = "expected 64 pixels in a JSON array"; return 0; }
    return 1;
}

static int64_t answer(const float probs[DIGITS]) {
    int order[DIGITS];
    char number[48];
    for (int i = 0; i < DIGITS; i++) order[i] = i;
    for (int i = 1; i < DIGITS; i++) /* highest first; stable */
        for (int j = i; j > 0 && probs[order[j]] > probs[order[j - 1]]; j--) {
            int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
        }
    begin(OK);
    snprintf(number, sizeof number, "{\"label\":\"%d\",\"scores\":[", order[0]);
    put_str(number);
    for (int i = 0; i < DIGITS; i++) {
        snprintf(number, sizeof number, "%s{\"label\":\"%d\",\"score\":%.9g}", i ? "," : "", order[i], probs[order[i]]);
        put_str(number);
    }
    snprintf(number, sizeof number, "],\"confidence\":%.9g}", probs[order[0]]);
    put_str(number);
    return finish();
}

EXPORT("edgecascade_infer") int64_t infer(int32_t ptr, int32_t len) {
    char *frame = (char *)(uintptr_t)ptr;
    float image[PIXELS], probs[DIGITS];
    const char *why = "";
    int64_t result;
    if (!loaded) result = error("not_loaded", "call load first");
    else if (!pixels(frame, (size_t)len, image, &why)) result = error("bad_input", why);
    else {
        float ink = 0;
        for (int i = 0; i < PIXELS; i++) ink += image[i];
        static const uint32_t dims[2] = {1, PIXELS};
        nn_tensor tensor = {dims, 2, NN_F32, image, sizeof image};
        uint32_t written = 0, e;
        if (ink < 64.0f) {
            begin(BEYOND);
            put_str("{\"reason\":\"almost blank image\"}");
            result = finish();
        } else if ((e = nn_set_input(context, 0, &tensor))) result = nn_error("set_input", e);
        else if ((e = nn_compute(context))) result = nn_error("compute", e);
        else if ((e = nn_get_output(context, 0, probs, sizeof probs, &written))) result = nn_error("get_output", e);
        else if (written != sizeof probs) result = error("model", "the model's output is not 10 floats");
        else result = answer(probs);
    }
    free(frame);
    return result;
}

EXPORT("edgecascade_prompt") int64_t prompt(int32_t ptr, int32_t len) {
    char *frame = (char *)(uintptr_t)ptr;
    float image[PIXELS];
    const char *why = "";
    int64_t result;
    if (!pixels(frame, (size_t)len, image, &why)) result = error("bad_input", why);
    else {
        /* The image as text, one row per line: ' ' blank to '#' ink. */
        char art[PIXELS + 8 * 3 + 1];
        size_t a = 0;
        for (int r = 0; r < 8; r++) {
            art[a++] = '|';
            for (int c = 0; c < 8; c++) art[a++] = " .:*#"[(int)(image[r * 8 + c] / 16.0f * 4.0f + 0.5f)];
            art[a++] = '|';
            art[a++] = '\n';
        }
        begin(OK);
        put_str("{\"messages\":[{\"role\":\"system\",\"content\":\"This 8x8 drawing ('#' is dark ink) shows one "
                "handwritten digit. Reply with the digit and nothing else.\"},{\"role\":\"user\",\"content\":");
        put_json(art, a);
        put_str("}],\"max_tokens\":4}");
        result = finish();
    }
    free(frame);
    return result;
}

/* The reply's one digit (in a tier's JSON answer, the label's). */
EXPORT("edgecascade_parse_reply") int64_t parse_reply(int32_t ptr, int32_t len) {
    char *reply = (char *)(uintptr_t)ptr;
    const char *start = reply, *end = reply + len;
    for (const char *p = reply; p + 9 <= end; p++)
        if (memcmp(p, "\"label\":\"", 9) == 0) { start = p + 9; end = start + 1 <= end ? start + 1 : end; break; }
    int found = -1, several = 0;
    for (const char *p = start; p < end; p++)
        if (*p >= '0' && *p <= '9') { if (found >= 0) several = 1; found = *p - '0'; }
    int64_t result;
    if (found < 0 || several) result = error("bad_reply", several ? "several digits in the reply" : "no digit in the reply");
    else {
        float probs[DIGITS] = {0};
        probs[found] = 1.0f;
        result = answer(probs);
    }
    free(reply);
    return result;
}
