/*
 * classify.c: route texts through an edgecascade plugin from C.
 *
 *   cc -I capi/include capi/examples/classify.c -L target/release -ledgecascade_capi \
 *      -Wl,-rpath,target/release -o classify
 *   ./classify target/plugins/news-topic "Shares rose as the bank cut rates"
 *   ./classify target/plugins/news-topic --cloud http://127.0.0.1:8080/v1 "Qx"
 *   ./classify device/news-topic --trust "$(cat release.key.pub)" "Rates rose"
 *
 * Options, before the texts: --cloud URL; --trust KEY (hex; repeatable: only
 * packages and precompiled artifacts signed by one of the keys are trusted);
 * --trust-native-code (run precompiled artifacts that no trusted key signed).
 *
 * Prints one line per text: label, confidence, source, reason.
 */
#include <stdio.h>
#include <string.h>

#include "edgecascade.h"

static const char *source_name(ec_source source) {
    switch (source) {
    case EC_SOURCE_LOCAL:
        return "local";
    case EC_SOURCE_CLOUD:
        return "cloud";
    case EC_SOURCE_LOCAL_FALLBACK:
        return "local_fallback";
    }
    return "?";
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s <package-dir> [--cloud URL] [--trust KEY]... [--trust-native-code] <text>...\n",
                argv[0]);
        return 2;
    }
    const char *package = argv[1];
    const char *cloud = NULL;
    const char *keys[8];
    ec_runtime_options options = {0};
    options.struct_size = sizeof options;
    options.trusted_keys = keys;
    int first = 2;
    while (first < argc && strncmp(argv[first], "--", 2) == 0) {
        if (strcmp(argv[first], "--trust-native-code") == 0) {
            options.trust_native_code = true;
            first += 1;
        } else if (first + 1 < argc && strcmp(argv[first], "--cloud") == 0) {
            cloud = argv[first + 1];
            first += 2;
        } else if (first + 1 < argc && strcmp(argv[first], "--trust") == 0 && options.trusted_keys_len < 8) {
            keys[options.trusted_keys_len++] = argv[first + 1];
            first += 2;
        } else {
            fprintf(stderr, "unknown or incomplete option %s\n", argv[first]);
            return 2;
        }
    }

    ec_runtime *runtime = NULL;
    ec_plugin *plugin = NULL;
    ec_cascade *cascade = NULL;
    int exit_code = 0;

    ec_status status = ec_runtime_new_with(&options, &runtime);
    if (status == EC_STATUS_OK) {
        status = ec_plugin_load(runtime, package, &plugin);
    }
    if (status == EC_STATUS_OK) {
        status = ec_cascade_new(plugin, cloud, &cascade);
    }
    for (int i = first; status == EC_STATUS_OK && i < argc; i++) {
        ec_reply *reply = NULL;
        status = ec_cascade_classify(cascade, argv[i], &reply);
        if (status != EC_STATUS_OK) {
            break;
        }
        const char *label = ec_reply_label(reply);
        printf("%s\t%.3f\t%s\t%s%s\n", label ? label : "-", ec_reply_confidence(reply),
               source_name(ec_reply_source(reply)), ec_reply_reason(reply),
               ec_reply_degraded(reply) ? "\tdegraded" : "");
        ec_reply_free(reply);
    }
    if (status != EC_STATUS_OK) {
        fprintf(stderr, "error %d: %s\n", (int)status, ec_last_error());
        exit_code = 1;
    }

    /* Free in any order: a cascade keeps its plugin alive, a plugin its runtime. */
    ec_cascade_free(cascade);
    ec_plugin_free(plugin);
    ec_runtime_free(runtime);
    return exit_code;
}
