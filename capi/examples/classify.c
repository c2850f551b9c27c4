/*
 * classify.c: route texts through an edgecascade plugin from C.
 *
 *   cc -I capi/include capi/examples/classify.c -L target/release -ledgecascade_capi \
 *      -Wl,-rpath,target/release -o classify
 *   ./classify target/plugins/news-topic "Shares rose as the bank cut rates"
 *   ./classify target/plugins/news-topic --cloud http://127.0.0.1:8080/v1 "Qx"
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
        fprintf(stderr, "usage: %s <package-dir> [--cloud URL] <text>...\n", argv[0]);
        return 2;
    }
    const char *package = argv[1];
    const char *cloud = NULL;
    int first = 2;
    if (argc > 4 && strcmp(argv[2], "--cloud") == 0) {
        cloud = argv[3];
        first = 4;
    }

    ec_runtime *runtime = NULL;
    ec_plugin *plugin = NULL;
    ec_cascade *cascade = NULL;
    int exit_code = 0;

    ec_status status = ec_runtime_new(NULL, &runtime);
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
