/*
 * edgecascade_frame.h: what every plugin in C needs to answer the host, per
 * guest/ABI.md: the reused result frame (valid until the next call), its
 * status byte, JSON string escaping, the packed (pointer << 32) | length, and
 * error frames. Header-only (static functions): each plugin is one module.
 */
#ifndef EDGECASCADE_FRAME_H
#define EDGECASCADE_FRAME_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))

enum { OK = 0, BEYOND = 1, ERROR = 2 };

/* The result frame: reused, valid until the next call (the ABI's rule). */
static char *out;
static size_t out_len, out_cap;
static int out_failed;

static void put(const char *bytes, size_t n) {
    if (out_failed) return;
    if (out_len + n > out_cap) {
        size_t cap = (out_len + n) * 2 + 64;
        char *grown = realloc(out, cap);
        if (!grown) { out_failed = 1; return; }
        out = grown;
        out_cap = cap;
    }
    memcpy(out + out_len, bytes, n);
    out_len += n;
}

static void put_str(const char *s) { put(s, strlen(s)); }

/* A JSON string: quotes, backslashes and control bytes escaped; UTF-8 passes through. */
static void put_json(const char *s, size_t n) {
    put("\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char escaped[8];
        if (c == '"' || c == '\\') { escaped[0] = '\\'; escaped[1] = (char)c; put(escaped, 2); }
        else if (c < 0x20) { snprintf(escaped, sizeof escaped, "\\u%04x", c); put(escaped, 6); }
        else put((const char *)&c, 1);
    }
    put("\"", 1);
}

/* Starts a frame with its status byte. */
static void begin(int status) {
    char byte = (char)status;
    out_len = 0;
    out_failed = 0;
    put(&byte, 1);
}

/* (pointer << 32) | length, as every call returns. */
static int64_t finish(void) {
    if (out_failed) return 0; /* an empty frame: the host reports it as malformed */
    return (int64_t)(((uint64_t)(uintptr_t)out << 32) | (uint32_t)out_len);
}

static int64_t error(const char *kind, const char *message) {
    begin(ERROR);
    put_str("{\"kind\":\"");
    put_str(kind);
    put_str("\",\"message\":");
    put_json(message, strlen(message));
    put_str("}");
    return finish();
}

/* The ABI's alloc: the host fills these bytes and hands them to exactly one call, which frees them. */
EXPORT("edgecascade_alloc") int32_t alloc(int32_t len) {
    return len < 0 ? 0 : (int32_t)(uintptr_t)malloc(len ? (size_t)len : 1);
}

#endif
