#include "io/idx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/status.h"

/* zlib prefixes its messages with the name given to gzdopen ("<fd:3>: "), which means nothing
 * to a user: the path is printed instead. */
static const char *gz_msg(gzFile gz, int *err) {
    const char *msg = gzerror(gz, err);
    if (!msg) return "?";
    if (strncmp(msg, "<fd:", 4) == 0) {
        const char *p = strstr(msg, ": ");
        if (p) return p + 2;
    }
    return msg;
}

/* Reads up to n bytes (fewer only at the end of the data) into buf, counting them in *got. */
static cn_status read_upto(gzFile gz, const char *path, void *buf, size_t n, size_t *got_out) {
    size_t got = 0;
    *got_out = 0;
    while (got < n) {
        size_t want = n - got > (1u << 20) ? (1u << 20) : n - got;
        int r = gzread(gz, (char *)buf + got, (unsigned)want);
        if (r < 0) {
            int err;
            const char *msg = gz_msg(gz, &err);
            if (err == Z_ERRNO)
                return cn_error(CN_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            return cn_error(CN_ERR_FORMAT, "%s: corrupt gzip data: %s", path, msg);
        }
        if (r == 0) break;
        got += (size_t)r;
        *got_out = got;
    }
    return CN_OK;
}

/* A gzip stream cut short reads as a clean end of data; zlib only tells it through gzerror. */
static cn_status check_stream(gzFile gz, const char *path) {
    int err;
    const char *msg = gz_msg(gz, &err);
    if (err == Z_OK || err == Z_STREAM_END) return CN_OK;
    return cn_error(CN_ERR_FORMAT, "%s: corrupt or truncated gzip data: %s", path,
                    msg);
}

static cn_status load(cn_idx *out, const char *path, gzFile gz) {
    unsigned char head[4];
    size_t r;
    CN_TRY(read_upto(gz, path, head, 4, &r));
    if (r < 4) {
        CN_TRY(check_stream(gz, path));
        return cn_error(CN_ERR_FORMAT, "%s: data is %zu bytes, too short for an IDX header",
                        path, r);
    }
    if (head[0] != 0 || head[1] != 0)
        return cn_error(CN_ERR_FORMAT,
                        "%s: bad magic %02x %02x %02x %02x (an IDX file starts with 00 00)",
                        path, head[0], head[1], head[2], head[3]);
    if (head[2] != CN_IDX_UBYTE && head[2] != CN_IDX_SBYTE)
        return cn_error(CN_ERR_FORMAT,
                        "%s: IDX element type 0x%02x is not supported (only 0x08 unsigned byte "
                        "and 0x09 signed byte)",
                        path, head[2]);
    int ndim = head[3];
    if (ndim < 1 || ndim > CN_IDX_MAX_DIMS)
        return cn_error(CN_ERR_FORMAT, "%s: IDX file has %d dimensions (supported: 1 to %d)",
                        path, ndim, CN_IDX_MAX_DIMS);
    unsigned char db[4 * CN_IDX_MAX_DIMS];
    CN_TRY(read_upto(gz, path, db, 4 * (size_t)ndim, &r));
    if (r < 4 * (size_t)ndim) {
        CN_TRY(check_stream(gz, path));
        return cn_error(CN_ERR_FORMAT, "%s: file ends inside the list of %d dimensions", path,
                        ndim);
    }
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        const unsigned char *p = db + 4 * i;
        uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (d == 0) return cn_error(CN_ERR_FORMAT, "%s: dimension %d is 0", path, i);
        if (d > CN_IDX_MAX_COUNT || count > CN_IDX_MAX_COUNT / d)
            return cn_error(CN_ERR_FORMAT, "%s: dimensions hold more than %zu elements", path,
                            CN_IDX_MAX_COUNT);
        count *= d;
        out->dims[i] = d;
    }
    out->ndim = ndim;
    out->type = head[2];

    /* Grow with the data actually read rather than trusting the header's size: a few hostile
     * bytes must not make us allocate gigabytes. */
    size_t cap = count < (1u << 20) ? count : (1u << 20), got = 0;
    out->data = malloc(cap);
    if (!out->data) return cn_error(CN_ERR_NOMEM, "%s: out of memory", path);
    while (got < count) {
        if (got == cap) {
            size_t nc = cap > count / 2 ? count : cap * 2;
            uint8_t *p = realloc(out->data, nc);
            if (!p) return cn_error(CN_ERR_NOMEM, "%s: out of memory for %zu bytes", path, nc);
            out->data = p;
            cap = nc;
        }
        CN_TRY(read_upto(gz, path, out->data + got, cap - got, &r));
        got += r;
        if (got < cap) break;
    }
    if (got < count) {
        CN_TRY(check_stream(gz, path));
        return cn_error(CN_ERR_FORMAT, "%s: truncated: expected %zu bytes of data, found %zu",
                        path, count, got);
    }
    unsigned char extra[64];
    CN_TRY(read_upto(gz, path, extra, sizeof extra, &r));
    if (r > 0)
        return cn_error(CN_ERR_FORMAT, "%s: trailing bytes after the %zu bytes of data", path,
                        count);
    CN_TRY(check_stream(gz, path));
    out->count = count;
    return CN_OK;
}

cn_status cn_idx_load(cn_idx *out, const char *path) {
    if (!out) return cn_error(CN_ERR_ARG, "cn_idx_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return cn_error(CN_ERR_ARG, "cn_idx_load: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cn_error(CN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    gzFile gz = gzdopen(fd, "rb");
    if (!gz) {
        close(fd);
        return cn_error(CN_ERR_NOMEM, "%s: cannot start reading (out of memory)", path);
    }
    gzbuffer(gz, 1u << 17);
    cn_status st = load(out, path, gz);
    gzclose(gz);
    if (st != CN_OK) cn_idx_free(out);
    return st;
}

void cn_idx_free(cn_idx *x) {
    if (!x) return;
    free(x->data);
    memset(x, 0, sizeof *x);
}
