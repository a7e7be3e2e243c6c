/* Status codes and error messages for the library internals.
 * Every function that can fail returns a cn_status; on failure it has called cn_error(), which
 * records a message in a thread-local buffer that cn_errmsg() (public) returns.  The library never
 * exits or aborts on a recoverable error. */
#ifndef CN_CORE_STATUS_H
#define CN_CORE_STATUS_H

#include "convnet.h"

/* Records the message (printf-style) for the calling thread and returns `st`, so that a failing
 * path reads `return cn_error(CN_ERR_FORMAT, "%s: bad header", path);`. */
cn_status cn_error(cn_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prefixes the current message with "context: " (used to add a file or layer name as an error
 * travels up). Returns `st`. */
cn_status cn_error_context(cn_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The status of the last cn_error() on this thread (CN_ERR_INTERNAL if none): for builders that
 * report failure as -1 after recording the error. */
cn_status cn_last_status(void);

#define CN_TRY(expr)                         \
    do {                                     \
        cn_status cn__st = (expr);           \
        if (cn__st != CN_OK) return cn__st;  \
    } while (0)

#endif
