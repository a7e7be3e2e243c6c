#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <stdarg.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"

/* Integers in the header come through cJSON as doubles, which hold integers exactly only up to
 * 2^53; anything larger cannot be a real offset or dimension anyway. */
#define MAX_JSON_INT 9007199254740992.0

static const struct {
    const char *name;
    size_t size;
} dtype_info[CN_DT_COUNT] = {
    [CN_DT_F32] = {"F32", 4}, [CN_DT_F64] = {"F64", 8}, [CN_DT_F16] = {"F16", 2},
    [CN_DT_BF16] = {"BF16", 2}, [CN_DT_I64] = {"I64", 8}, [CN_DT_I32] = {"I32", 4},
    [CN_DT_I16] = {"I16", 2},  [CN_DT_I8] = {"I8", 1},   [CN_DT_U8] = {"U8", 1},
    [CN_DT_BOOL] = {"BOOL", 1},
};

/* Dtypes the format defines that this library has no use for: reported as unsupported rather
 * than as a corrupt file. */
static const char *const foreign_dtypes[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2",
                                             "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};

size_t cn_dtype_size(cn_dtype dt) {
    return (unsigned)dt < CN_DT_COUNT ? dtype_info[dt].size : 0;
}

const char *cn_dtype_name(cn_dtype dt) {
    return (unsigned)dt < CN_DT_COUNT ? dtype_info[dt].name : "?";
}

static int dtype_from_name(const char *s, cn_dtype *out) {
    for (int i = 0; i < CN_DT_COUNT; i++) {
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (cn_dtype)i;
            return 1;
        }
    }
    return 0;
}

static int is_foreign_dtype(const char *s) {
    for (size_t i = 0; i < sizeof foreign_dtypes / sizeof foreign_dtypes[0]; i++)
        if (strcmp(s, foreign_dtypes[i]) == 0) return 1;
    return 0;
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), as the format requires
 * of the header. */
static int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        unsigned cp = c & (0x7f >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

/* cJSON decodes "\u0000" into a NUL that silently cuts the string short, which would let two
 * different names compare equal or hide part of a name: such headers are refused. Outside
 * strings a backslash is invalid JSON anyway, so no string tracking is needed. */
static int has_nul_escape(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && n - i >= 6 && memcmp(s + i + 2, "0000", 4) == 0) return 1;
        i++;
    }
    return 0;
}

/* Tensor names come from the file: quote them for messages with control bytes escaped and the
 * length bounded, so that a hostile name cannot garble or flood the error text. */
static const char *quote(char *buf, size_t cap, const char *s) {
    size_t o = 0, limit = cap - 8;
    buf[o++] = '\'';
    for (; *s && o < limit; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
            if (o + 4 >= limit) break;
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    if (*s) {
        while (o > 1 && ((unsigned char)buf[o - 1] & 0xc0) == 0x80) o--;
        if (o > 1 && (unsigned char)buf[o - 1] >= 0xc0) o--;
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '\'';
    buf[o] = 0;
    return buf;
}

#define QCAP 96

static const char *fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = 0;
    buf[o++] = '[';
    buf[o] = 0;
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o + 2 <= cap) {
        buf[o++] = ']';
        buf[o] = 0;
    }
    return buf;
}

/* ---- reader ---------------------------------------------------------------------------------- */

typedef struct {
    char *key, *value;
} meta_kv;

struct cn_st_file {
    char *path;
    unsigned char *alloc;
    int count;
    cn_st_tensor *tensors;
    int *by_name; /* tensor indices sorted by name, for cn_st_find */
    int nmeta;
    meta_kv *meta;
};

typedef struct {
    uint64_t begin, end;
    int index;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* qsort has no context argument: the tensors being sorted are reached through this. It is only
 * set and used within one call on one thread, hence thread-local. */
static _Thread_local const cn_st_tensor *sort_tensors;

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(sort_tensors[*(const int *)a].name, sort_tensors[*(const int *)b].name);
}

static cn_status fmt_err(const cn_st_file *f, const char *tname, cn_status st, const char *fmt,
                         ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static cn_status fmt_err(const cn_st_file *f, const char *tname, cn_status st, const char *fmt,
                         ...) {
    char msg[512], q[QCAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (tname)
        return cn_error(st, "%s: tensor %s: %s", f->path, quote(q, sizeof q, tname), msg);
    return cn_error(st, "%s: %s", f->path, msg);
}

/* A JSON number that is an integer in [0, 2^53]: -1 if not a number or not integral, -2 if
 * negative, -3 if too large, else 0 with the value in *out. */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (d != d) return -1;
    if (d < 0) return -2;
    if (d > MAX_JSON_INT) return -3;
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return -1;
    *out = u;
    return 0;
}

static const char *json_uint_problem(int rc) {
    return rc == -2 ? "is negative" : rc == -3 ? "is too large" : "is not an integer";
}

/* Looks up a field of a tensor entry, rejecting a repeated field rather than silently taking
 * one of them. */
static cn_status entry_field(const cn_st_file *f, const char *tname, const cJSON *entry,
                             const char *key, const cJSON **out) {
    *out = NULL;
    for (const cJSON *c = entry->child; c; c = c->next) {
        if (c->string && strcmp(c->string, key) == 0) {
            if (*out) return fmt_err(f, tname, CN_ERR_FORMAT, "field \"%s\" appears twice", key);
            *out = c;
        }
    }
    if (!*out) return fmt_err(f, tname, CN_ERR_FORMAT, "missing \"%s\"", key);
    return CN_OK;
}

static cn_status parse_tensor(cn_st_file *f, const cJSON *entry, cn_st_tensor *t,
                              uint64_t data_size, span *sp) {
    const char *name = t->name;
    if (!cJSON_IsObject(entry))
        return fmt_err(f, name, CN_ERR_FORMAT, "entry is not a JSON object");

    const cJSON *jd, *js, *jo;
    CN_TRY(entry_field(f, name, entry, "dtype", &jd));
    CN_TRY(entry_field(f, name, entry, "shape", &js));
    CN_TRY(entry_field(f, name, entry, "data_offsets", &jo));

    if (!cJSON_IsString(jd) || !jd->valuestring)
        return fmt_err(f, name, CN_ERR_FORMAT, "\"dtype\" is not a string");
    if (!dtype_from_name(jd->valuestring, &t->dtype)) {
        char q[QCAP];
        quote(q, sizeof q, jd->valuestring);
        if (is_foreign_dtype(jd->valuestring))
            return fmt_err(f, name, CN_ERR_UNSUPPORTED, "dtype %s is not supported", q);
        return fmt_err(f, name, CN_ERR_FORMAT, "unknown dtype %s", q);
    }
    size_t esize = cn_dtype_size(t->dtype);

    if (!cJSON_IsArray(js)) return fmt_err(f, name, CN_ERR_FORMAT, "\"shape\" is not an array");
    int ndim = cJSON_GetArraySize(js);
    if (ndim > CN_ST_MAX_DIMS)
        return fmt_err(f, name, CN_ERR_UNSUPPORTED, "shape has %d dimensions, more than %d",
                       ndim, CN_ST_MAX_DIMS);
    t->ndim = ndim;
    size_t nbytes = esize;
    int overflow = 0;
    int i = 0;
    for (const cJSON *c = js->child; c; c = c->next, i++) {
        uint64_t v;
        int rc = json_uint(c, &v);
        if (rc) return fmt_err(f, name, CN_ERR_FORMAT, "shape[%d] %s", i, json_uint_problem(rc));
        t->shape[i] = (int64_t)v;
        if (v > SIZE_MAX || !mul_size(nbytes, (size_t)v, &nbytes)) overflow = 1;
    }
    char sh[160];
    fmt_shape(sh, sizeof sh, ndim, t->shape);
    /* A zero dimension makes the product 0 whatever the others are, so only then is an
     * overflowing partial product harmless. */
    if (overflow) {
        int has_zero = 0;
        for (int k = 0; k < ndim; k++) has_zero |= t->shape[k] == 0;
        if (!has_zero)
            return fmt_err(f, name, CN_ERR_FORMAT, "shape %s of %s is too large (%s)", sh,
                           cn_dtype_name(t->dtype), "its byte size overflows");
        nbytes = 0;
    }

    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return fmt_err(f, name, CN_ERR_FORMAT, "\"data_offsets\" is not an array of 2 integers");
    uint64_t b, e;
    int rc = json_uint(jo->child, &b);
    if (rc)
        return fmt_err(f, name, CN_ERR_FORMAT, "data_offsets begin %s", json_uint_problem(rc));
    rc = json_uint(jo->child->next, &e);
    if (rc) return fmt_err(f, name, CN_ERR_FORMAT, "data_offsets end %s", json_uint_problem(rc));
    if (e < b)
        return fmt_err(f, name, CN_ERR_FORMAT,
                       "data_offsets [%llu, %llu] end before they begin", (unsigned long long)b,
                       (unsigned long long)e);
    if (e > data_size)
        return fmt_err(f, name, CN_ERR_FORMAT,
                       "data_offsets [%llu, %llu] reach past the data region (%llu bytes)",
                       (unsigned long long)b, (unsigned long long)e,
                       (unsigned long long)data_size);
    if (e - b != nbytes)
        return fmt_err(f, name, CN_ERR_FORMAT,
                       "data_offsets [%llu, %llu] do not match shape %s of %s (%zu bytes)",
                       (unsigned long long)b, (unsigned long long)e, sh,
                       cn_dtype_name(t->dtype), nbytes);
    t->nbytes = nbytes;
    sp->begin = b;
    sp->end = e;
    return CN_OK;
}

static cn_status parse_metadata(cn_st_file *f, const cJSON *jm) {
    if (cJSON_IsNull(jm)) return CN_OK;
    if (!cJSON_IsObject(jm))
        return fmt_err(f, NULL, CN_ERR_FORMAT, "\"__metadata__\" is not a JSON object");
    int n = cJSON_GetArraySize(jm);
    f->meta = calloc((size_t)n + 1, sizeof *f->meta);
    if (!f->meta) return cn_error(CN_ERR_NOMEM, "%s: out of memory for metadata", f->path);
    for (const cJSON *c = jm->child; c; c = c->next) {
        char q[QCAP];
        const char *key = c->string ? c->string : "";
        if (!cJSON_IsString(c) || !c->valuestring)
            return fmt_err(f, NULL, CN_ERR_FORMAT, "metadata %s is not a string",
                           quote(q, sizeof q, key));
        for (int k = 0; k < f->nmeta; k++)
            if (strcmp(f->meta[k].key, key) == 0)
                return fmt_err(f, NULL, CN_ERR_FORMAT, "metadata %s appears twice",
                               quote(q, sizeof q, key));
        meta_kv *m = &f->meta[f->nmeta];
        m->key = strdup(key);
        m->value = strdup(c->valuestring);
        f->nmeta++;
        if (!m->key || !m->value)
            return cn_error(CN_ERR_NOMEM, "%s: out of memory for metadata", f->path);
    }
    return CN_OK;
}

/* Checks the tensors tile the data region exactly, as the format requires: no byte belongs to
 * two tensors and none to no tensor. */
static cn_status check_coverage(cn_st_file *f, span *sp, uint64_t data_size) {
    qsort(sp, (size_t)f->count, sizeof *sp, cmp_span);
    uint64_t expect = 0;
    for (int i = 0; i < f->count; i++) {
        if (sp[i].begin < expect) {
            char q1[QCAP], q2[QCAP];
            const span *prev = &sp[i - 1];
            return fmt_err(f, NULL, CN_ERR_FORMAT,
                           "tensor %s data_offsets [%llu, %llu] overlap tensor %s [%llu, %llu]",
                           quote(q1, sizeof q1, f->tensors[sp[i].index].name),
                           (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end,
                           quote(q2, sizeof q2, f->tensors[prev->index].name),
                           (unsigned long long)prev->begin, (unsigned long long)prev->end);
        }
        if (sp[i].begin > expect)
            return fmt_err(f, NULL, CN_ERR_FORMAT,
                           "bytes [%llu, %llu) of the data region belong to no tensor",
                           (unsigned long long)expect, (unsigned long long)sp[i].begin);
        expect = sp[i].end;
    }
    if (expect != data_size)
        return fmt_err(f, NULL, CN_ERR_FORMAT,
                       "bytes [%llu, %llu) of the data region belong to no tensor",
                       (unsigned long long)expect, (unsigned long long)data_size);
    return CN_OK;
}

/* Parses the file image at `base` (`size` bytes, already owned by f). */
static cn_status parse(cn_st_file *f, const unsigned char *base, size_t size) {
    if (size < 8)
        return fmt_err(f, NULL, CN_ERR_FORMAT,
                       "file is %zu bytes, too short for the 8-byte header length", size);
    uint64_t n = le64(base);
    if (n == 0) return fmt_err(f, NULL, CN_ERR_FORMAT, "header length is 0");
    if (n > CN_ST_MAX_HEADER)
        return fmt_err(f, NULL, CN_ERR_FORMAT, "header length %llu exceeds the limit of %llu",
                       (unsigned long long)n, (unsigned long long)CN_ST_MAX_HEADER);
    if (n > size - 8)
        return fmt_err(f, NULL, CN_ERR_FORMAT,
                       "header length %llu exceeds the file size (%zu bytes)",
                       (unsigned long long)n, size);
    const char *hdr = (const char *)base + 8;
    size_t hlen = (size_t)n;
    uint64_t data_size = size - 8 - hlen;

    if (!utf8_valid((const unsigned char *)hdr, hlen))
        return fmt_err(f, NULL, CN_ERR_FORMAT, "header is not valid UTF-8");
    if (has_nul_escape(hdr, hlen))
        return fmt_err(f, NULL, CN_ERR_FORMAT, "header contains the escape \\u0000 (NUL)");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        return fmt_err(f, NULL, CN_ERR_FORMAT, "header is not valid JSON (error near byte %zu)",
                       at);
    }
    cn_status st = CN_OK;
    span *sp = NULL;
    for (const char *p = end; p < hdr + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = fmt_err(f, NULL, CN_ERR_FORMAT, "header has data after the JSON (at byte %zu)",
                         (size_t)(p - hdr));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = fmt_err(f, NULL, CN_ERR_FORMAT, "header is not a JSON object");
        goto done;
    }
    if (hdr[0] != '{') {
        st = fmt_err(f, NULL, CN_ERR_FORMAT, "header does not start with '{'");
        goto done;
    }

    const cJSON *jmeta = NULL;
    int count = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c->string && strcmp(c->string, "__metadata__") == 0) {
            if (jmeta) {
                st = fmt_err(f, NULL, CN_ERR_FORMAT, "\"__metadata__\" appears twice");
                goto done;
            }
            jmeta = c;
        } else if (count == INT_MAX) {
            st = fmt_err(f, NULL, CN_ERR_FORMAT, "too many tensors");
            goto done;
        } else {
            count++;
        }
    }
    f->tensors = calloc((size_t)count + 1, sizeof *f->tensors);
    f->by_name = calloc((size_t)count + 1, sizeof *f->by_name);
    sp = calloc((size_t)count + 1, sizeof *sp);
    if (!f->tensors || !f->by_name || !sp) {
        st = cn_error(CN_ERR_NOMEM, "%s: out of memory for %d tensors", f->path, count);
        goto done;
    }
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c == jmeta) continue;
        cn_st_tensor *t = &f->tensors[f->count];
        t->name = strdup(c->string ? c->string : "");
        if (!t->name) {
            st = cn_error(CN_ERR_NOMEM, "%s: out of memory for tensor names", f->path);
            goto done;
        }
        sp[f->count].index = f->count;
        f->by_name[f->count] = f->count;
        f->count++;
        st = parse_tensor(f, c, t, data_size, &sp[f->count - 1]);
        if (st) goto done;
        t->data = base + 8 + hlen + sp[f->count - 1].begin;
    }

    sort_tensors = f->tensors;
    qsort(f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_by_name);
    for (int i = 1; i < f->count; i++) {
        const char *a = f->tensors[f->by_name[i - 1]].name, *b = f->tensors[f->by_name[i]].name;
        if (strcmp(a, b) == 0) {
            char q[QCAP];
            st = fmt_err(f, NULL, CN_ERR_FORMAT, "tensor name %s appears twice",
                         quote(q, sizeof q, a));
            goto done;
        }
    }
    st = check_coverage(f, sp, data_size);
    if (st) goto done;
    if (jmeta) st = parse_metadata(f, jmeta);

done:
    free(sp);
    cJSON_Delete(root);
    return st;
}

/* Where to put the file image inside its allocation so that the data region lands on an 8-byte
 * boundary (malloc's alignment is at least 8), letting callers view tensor data in place. */
static size_t data_pad(const unsigned char *first8, size_t size) {
    if (size < 8) return 0;
    uint64_t n = le64(first8);
    if (n > size - 8) return 0;
    return (size_t)((8 - (8 + n) % 8) % 8);
}

static cn_st_file *file_new(const char *path) {
    cn_st_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->path = strdup(path ? path : "(null)");
    if (!f->path) {
        free(f);
        return NULL;
    }
    return f;
}

static ssize_t pread_all(int fd, void *buf, size_t n, off_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

cn_status cn_st_open_memory(cn_st_file **out, const char *name, const void *bytes, size_t n) {
    if (!out) return cn_error(CN_ERR_ARG, "cn_st_open_memory: out is NULL");
    *out = NULL;
    if (!bytes && n) return cn_error(CN_ERR_ARG, "cn_st_open_memory: bytes is NULL");
    cn_st_file *f = file_new(name);
    if (!f) return cn_error(CN_ERR_NOMEM, "out of memory opening %s", name ? name : "(null)");
    size_t pad = data_pad(bytes, n);
    /* No slack bytes, so that the sanitizers catch any read past the image. */
    if (n > SIZE_MAX - 16 || !(f->alloc = malloc(n + pad ? n + pad : 1))) {
        cn_st_close(f);
        return cn_error(CN_ERR_NOMEM, "%s: out of memory for %zu bytes", name, n);
    }
    if (n) memcpy(f->alloc + pad, bytes, n);
    cn_status st = parse(f, f->alloc + pad, n);
    if (st) {
        cn_st_close(f);
        return st;
    }
    *out = f;
    return CN_OK;
}

cn_status cn_st_open(cn_st_file **out, const char *path) {
    if (!out) return cn_error(CN_ERR_ARG, "cn_st_open: out is NULL");
    *out = NULL;
    if (!path) return cn_error(CN_ERR_ARG, "cn_st_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cn_error(CN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return cn_error(CN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return cn_error(CN_ERR_IO, "%s: not a regular file", path);
    }
    if ((uintmax_t)sb.st_size > SIZE_MAX - 16) {
        close(fd);
        return cn_error(CN_ERR_NOMEM, "%s: file too large to load", path);
    }
    size_t size = (size_t)sb.st_size;
    cn_st_file *f = file_new(path);
    if (!f) {
        close(fd);
        return cn_error(CN_ERR_NOMEM, "out of memory opening %s", path);
    }
    unsigned char first8[8];
    ssize_t r = pread_all(fd, first8, size < 8 ? size : 8, 0);
    size_t pad = r == (ssize_t)(size < 8 ? size : 8) ? data_pad(first8, size) : 0;
    if (r >= 0 && !(f->alloc = malloc(size + pad ? size + pad : 1))) {
        close(fd);
        cn_st_close(f);
        return cn_error(CN_ERR_NOMEM, "%s: out of memory for %zu bytes", path, size);
    }
    if (r >= 0) r = pread_all(fd, f->alloc + pad, size, 0);
    int e = errno;
    close(fd);
    if (r < 0 || (size_t)r != size) {
        cn_st_close(f);
        if (r < 0) return cn_error(CN_ERR_IO, "%s: read failed: %s", path, strerror(e));
        return cn_error(CN_ERR_IO, "%s: file shrank while being read", path);
    }
    cn_status st = parse(f, f->alloc + pad, size);
    if (st) {
        cn_st_close(f);
        return st;
    }
    *out = f;
    return CN_OK;
}

void cn_st_close(cn_st_file *f) {
    if (!f) return;
    if (f->tensors)
        for (int i = 0; i < f->count; i++) free((char *)f->tensors[i].name);
    if (f->meta)
        for (int i = 0; i < f->nmeta; i++) {
            free(f->meta[i].key);
            free(f->meta[i].value);
        }
    free(f->meta);
    free(f->tensors);
    free(f->by_name);
    free(f->alloc);
    free(f->path);
    free(f);
}

int cn_st_count(const cn_st_file *f) { return f ? f->count : 0; }

const cn_st_tensor *cn_st_at(const cn_st_file *f, int i) {
    if (!f || i < 0 || i >= f->count) return NULL;
    return &f->tensors[i];
}

const cn_st_tensor *cn_st_find(const cn_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    int lo = 0, hi = f->count;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const cn_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *cn_st_meta(const cn_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

int cn_st_meta_count(const cn_st_file *f) { return f ? f->nmeta : 0; }

cn_status cn_st_meta_at(const cn_st_file *f, int i, const char **key, const char **value) {
    if (!f || i < 0 || i >= f->nmeta)
        return cn_error(CN_ERR_ARG, "cn_st_meta_at: index %d out of range", i);
    if (key) *key = f->meta[i].key;
    if (value) *value = f->meta[i].value;
    return CN_OK;
}

const char *cn_st_path(const cn_st_file *f) { return f ? f->path : NULL; }

static float half_to_float(unsigned h) {
    unsigned sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float v;
    if (exp == 0) {
        v = (float)mant * (1.0f / 16777216.0f);
    } else if (exp == 31) {
        v = mant ? NAN : INFINITY;
    } else {
        uint32_t bits = ((uint32_t)(exp + 112) << 23) | ((uint32_t)mant << 13);
        memcpy(&v, &bits, sizeof v);
    }
    return sign ? -v : v;
}

/* Out-of-range double-to-float conversion is undefined in ISO C, so saturate by hand, rounding
 * as IEEE would (anything below FLT_MAX + half an ulp still rounds to FLT_MAX). */
static float double_to_float(double d) {
    if (d > FLT_MAX) return d >= 0x1.ffffffp127 ? INFINITY : FLT_MAX;
    if (d < -FLT_MAX) return d <= -0x1.ffffffp127 ? -INFINITY : -FLT_MAX;
    return (float)d;
}

cn_status cn_st_read_f32(const cn_st_file *f, const cn_st_tensor *t, float *dst, size_t count) {
    if (!f || !t) return cn_error(CN_ERR_ARG, "cn_st_read_f32: file or tensor is NULL");
    if (t < f->tensors || t >= f->tensors + f->count)
        return cn_error(CN_ERR_ARG, "%s: cn_st_read_f32: tensor is not from this file", f->path);
    size_t n = t->nbytes / cn_dtype_size(t->dtype);
    char q[QCAP], sh[160];
    if (count != n)
        return cn_error(CN_ERR_SHAPE, "%s: tensor %s: has %zu elements (shape %s), expected %zu",
                        f->path, quote(q, sizeof q, t->name), n,
                        fmt_shape(sh, sizeof sh, t->ndim, t->shape), count);
    if (n && !dst) return cn_error(CN_ERR_ARG, "cn_st_read_f32: dst is NULL");
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case CN_DT_F32:
        for (size_t i = 0; i < n; i++, p += 4) {
            uint32_t b = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24;
            memcpy(&dst[i], &b, 4);
        }
        return CN_OK;
    case CN_DT_F64:
        for (size_t i = 0; i < n; i++, p += 8) {
            uint64_t b = le64(p);
            double d;
            memcpy(&d, &b, 8);
            dst[i] = double_to_float(d);
        }
        return CN_OK;
    case CN_DT_F16:
        for (size_t i = 0; i < n; i++, p += 2) dst[i] = half_to_float(p[0] | (unsigned)p[1] << 8);
        return CN_OK;
    case CN_DT_BF16:
        for (size_t i = 0; i < n; i++, p += 2) {
            uint32_t b = ((uint32_t)p[0] | (uint32_t)p[1] << 8) << 16;
            memcpy(&dst[i], &b, 4);
        }
        return CN_OK;
    default:
        return cn_error(CN_ERR_UNSUPPORTED, "%s: tensor %s: dtype %s is not a float type",
                        f->path, quote(q, sizeof q, t->name), cn_dtype_name(t->dtype));
    }
}

/* ---- writer ---------------------------------------------------------------------------------- */

typedef struct {
    char *name;
    cn_dtype dt;
    int ndim;
    int64_t shape[CN_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} wentry;

struct cn_st_writer {
    wentry *t;
    int n, cap;
    meta_kv *meta;
    int nmeta, cap_meta;
};

cn_status cn_st_writer_new(cn_st_writer **out) {
    if (!out) return cn_error(CN_ERR_ARG, "cn_st_writer_new: out is NULL");
    *out = calloc(1, sizeof **out);
    return *out ? CN_OK : cn_error(CN_ERR_NOMEM, "out of memory for a safetensors writer");
}

void cn_st_writer_free(cn_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->t);
    free(w->meta);
    free(w);
}

static int grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return 1;
    if (*cap > INT_MAX / 2) return 0;
    int nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return 0;
    *arr = p;
    *cap = nc;
    return 1;
}

cn_status cn_st_writer_meta(cn_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return cn_error(CN_ERR_ARG, "cn_st_writer_meta: NULL argument");
    if (!utf8_valid((const unsigned char *)key, strlen(key)) ||
        !utf8_valid((const unsigned char *)value, strlen(value)))
        return cn_error(CN_ERR_ARG, "cn_st_writer_meta: key or value is not valid UTF-8");
    char *v = strdup(value);
    if (!v) return cn_error(CN_ERR_NOMEM, "out of memory for metadata");
    for (int i = 0; i < w->nmeta; i++) {
        if (strcmp(w->meta[i].key, key) == 0) {
            free(w->meta[i].value);
            w->meta[i].value = v;
            return CN_OK;
        }
    }
    char *k = strdup(key);
    if (!k || !grow((void **)&w->meta, &w->cap_meta, w->nmeta + 1, sizeof *w->meta)) {
        free(k);
        free(v);
        return cn_error(CN_ERR_NOMEM, "out of memory for metadata");
    }
    w->meta[w->nmeta].key = k;
    w->meta[w->nmeta].value = v;
    w->nmeta++;
    return CN_OK;
}

cn_status cn_st_writer_add(cn_st_writer *w, const char *name, cn_dtype dt, int ndim,
                           const int64_t *shape, const void *data) {
    if (!w || !name) return cn_error(CN_ERR_ARG, "cn_st_writer_add: NULL argument");
    char q[QCAP];
    quote(q, sizeof q, name);
    if (!utf8_valid((const unsigned char *)name, strlen(name)))
        return cn_error(CN_ERR_ARG, "cn_st_writer_add: tensor name %s is not valid UTF-8", q);
    if (strcmp(name, "__metadata__") == 0)
        return cn_error(CN_ERR_ARG, "cn_st_writer_add: \"__metadata__\" is reserved");
    if (cn_dtype_size(dt) == 0)
        return cn_error(CN_ERR_ARG, "cn_st_writer_add: tensor %s: invalid dtype %d", q, (int)dt);
    if (ndim < 0 || ndim > CN_ST_MAX_DIMS || (ndim > 0 && !shape))
        return cn_error(CN_ERR_ARG, "cn_st_writer_add: tensor %s: invalid ndim %d", q, ndim);
    size_t nbytes = cn_dtype_size(dt);
    int overflow = 0, zero = 0;
    for (int i = 0; i < ndim; i++) {
        /* The reader accepts dims up to 2^53 only (JSON numbers are doubles). */
        if (shape[i] < 0 || (double)shape[i] > MAX_JSON_INT)
            return cn_error(CN_ERR_ARG, "cn_st_writer_add: tensor %s: invalid dim %lld", q,
                            (long long)shape[i]);
        zero |= shape[i] == 0;
        if ((uint64_t)shape[i] > SIZE_MAX || !mul_size(nbytes, (size_t)shape[i], &nbytes))
            overflow = 1;
    }
    if (zero)
        nbytes = 0;
    else if (overflow)
        return cn_error(CN_ERR_ARG, "cn_st_writer_add: tensor %s: shape too large", q);
    if (nbytes && !data)
        return cn_error(CN_ERR_ARG, "cn_st_writer_add: tensor %s: data is NULL", q);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return cn_error(CN_ERR_ARG, "cn_st_writer_add: tensor %s added twice", q);
    char *nm = strdup(name);
    if (!nm || !grow((void **)&w->t, &w->cap, w->n + 1, sizeof *w->t)) {
        free(nm);
        return cn_error(CN_ERR_NOMEM, "out of memory adding tensor %s", q);
    }
    wentry *e = &w->t[w->n++];
    memset(e, 0, sizeof *e);
    e->name = nm;
    e->dt = dt;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = nbytes;
    return CN_OK;
}

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (n > SIZE_MAX / 2 - b->len) {
        b->failed = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1) nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static cn_status build_header(const cn_st_writer *w, sbuf *b, const char *path) {
    char num[64];
    uint64_t off = 0;
    sb_str(b, "{");
    if (w->nmeta) {
        sb_str(b, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_str(b, ",");
            sb_json_string(b, w->meta[i].key);
            sb_str(b, ":");
            sb_json_string(b, w->meta[i].value);
        }
        sb_str(b, "}");
    }
    for (int i = 0; i < w->n; i++) {
        const wentry *e = &w->t[i];
        if (i || w->nmeta) sb_str(b, ",");
        sb_json_string(b, e->name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, cn_dtype_name(e->dt));
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)e->shape[d]);
            sb_str(b, num);
        }
        if (e->nbytes > UINT64_MAX - off)
            return cn_error(CN_ERR_ARG, "%s: tensors too large in total", path);
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + e->nbytes));
        sb_str(b, num);
        off += e->nbytes;
    }
    sb_str(b, "}");
    while (!b->failed && b->len % 8) sb_str(b, " ");
    if (b->failed) return cn_error(CN_ERR_NOMEM, "%s: out of memory building the header", path);
    if (b->len > CN_ST_MAX_HEADER)
        return cn_error(CN_ERR_ARG, "%s: header would be %zu bytes, over the limit of %llu",
                        path, b->len, (unsigned long long)CN_ST_MAX_HEADER);
    return CN_OK;
}

/* Makes the rename durable; a filesystem that cannot sync directories (EINVAL) is not an error. */
static cn_status sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir) return cn_error(CN_ERR_NOMEM, "%s: out of memory", path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cn_status st = CN_OK;
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        st = cn_error(CN_ERR_IO, "%s: written, but syncing directory %s failed: %s", path, dir,
                      strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return st;
}

cn_status cn_st_writer_save(cn_st_writer *w, const char *path) {
    if (!w || !path) return cn_error(CN_ERR_ARG, "cn_st_writer_save: NULL argument");
    sbuf hb = {0};
    cn_status st = build_header(w, &hb, path);
    if (st) {
        free(hb.p);
        return st;
    }
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(hb.p);
        return cn_error(CN_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

    /* O_EXCL: never write through a symlink or into a file someone else is writing. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = cn_error(CN_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp,
                      strerror(errno));
        free(tmp);
        free(hb.p);
        return st;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hb.len >> (8 * i));
    int bad = write_all(fd, len8, 8) || write_all(fd, hb.p, hb.len);
    for (int i = 0; i < w->n && !bad; i++)
        if (w->t[i].nbytes) bad = write_all(fd, w->t[i].data, w->t[i].nbytes);
    const char *what = "write";
    if (!bad && fsync(fd) != 0) bad = 1, what = "fsync";
    int e = errno;
    if (close(fd) != 0 && !bad) bad = 1, what = "close", e = errno;
    if (!bad && rename(tmp, path) != 0) bad = 1, what = "rename", e = errno;
    if (bad) {
        unlink(tmp);
        st = cn_error(CN_ERR_IO, "%s: %s of temporary file %s failed: %s", path, what, tmp,
                      strerror(e));
    } else {
        st = sync_dir(path);
    }
    free(tmp);
    free(hb.p);
    return st;
}
