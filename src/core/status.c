#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char errbuf[1024];
static _Thread_local cn_status last_status;

cn_status cn_last_status(void) { return last_status != CN_OK ? last_status : CN_ERR_INTERNAL; }

cn_status cn_error(cn_status st, const char *fmt, ...) {
    va_list ap;
    last_status = st;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return st;
}

cn_status cn_error_context(cn_status st, const char *fmt, ...) {
    char prefix[512], old[sizeof errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, sizeof old);
    snprintf(errbuf, sizeof errbuf, "%s: %s", prefix, old);
    return st;
}

const char *cn_errmsg(void) { return errbuf[0] ? errbuf : "no error"; }

void cn_clear_error(void) { errbuf[0] = 0; }

const char *cn_status_name(cn_status st) {
    switch (st) {
    case CN_OK: return "ok";
    case CN_ERR_NOMEM: return "out of memory";
    case CN_ERR_IO: return "i/o error";
    case CN_ERR_FORMAT: return "bad file format";
    case CN_ERR_ARG: return "invalid argument";
    case CN_ERR_SHAPE: return "shape mismatch";
    case CN_ERR_UNSUPPORTED: return "unsupported";
    case CN_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}
