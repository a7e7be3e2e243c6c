/* Tests of the file readers and writers in src/io: safetensors round trips and every kind of
 * malformed file, atomic saves, IDX files and the MNIST loader. Ends with "io: N passed, N
 * failed". Set CN_TEST_VERBOSE=1 to see each expected error message. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/status.h"
#include "io/dataset.h"
#include "io/idx.h"
#include "io/safetensors.h"

static int passed, failed, verbose;
static char tmpdir[256];

static void check(int ok, int line, const char *fmt, ...) {
    if (ok) {
        passed++;
        return;
    }
    failed++;
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL (line %d): ", line);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

#define CHECK(cond, ...) check(!!(cond), __LINE__, __VA_ARGS__)

static char *tpath(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static int write_file(const char *path, const void *bytes, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = n ? fwrite(bytes, 1, n, fp) : 0;
    return (fclose(fp) == 0 && w == n) ? 0 : -1;
}

static unsigned char *read_whole(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            unsigned char *p = realloc(buf, cap);
            if (!p) break;
            buf = p;
        }
        size_t r = fread(buf + len, 1, cap - len, fp);
        if (r == 0) break;
        len += r;
    }
    fclose(fp);
    *n = len;
    return buf;
}

static int write_gz(const char *path, const void *bytes, size_t n) {
    gzFile gz = gzopen(path, "wb");
    if (!gz) return -1;
    int w = n ? gzwrite(gz, bytes, (unsigned)n) : 0;
    return (gzclose(gz) == Z_OK && (size_t)w == n) ? 0 : -1;
}

/* Checks a failure has the expected status and a message naming the file (and `substr`). */
static void expect_err(int line, const char *what, cn_status got, cn_status want,
                       const char *path, const char *substr) {
    const char *msg = cn_errmsg();
    if (verbose) printf("  [%s] %s -> %s\n", what, cn_status_name(got), msg);
    check(got == want, line, "%s: status %s, want %s (%s)", what, cn_status_name(got),
          cn_status_name(want), msg);
    if (got == CN_OK) return;
    check(strstr(msg, path) != NULL, line, "%s: message does not name %s: %s", what, path, msg);
    if (substr)
        check(strstr(msg, substr) != NULL, line, "%s: message lacks \"%s\": %s", what, substr,
              msg);
}

/* ---- safetensors: broken files ------------------------------------------------------------- */

/* Writes 8-byte length + header + data, with the length field given explicitly. */
static void put_st_raw(const char *path, uint64_t hlen_field, const char *header,
                       size_t data_len) {
    size_t hl = strlen(header);
    size_t n = 8 + hl + data_len;
    unsigned char *b = calloc(1, n);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen_field >> (8 * i));
    memcpy(b + 8, header, hl);
    write_file(path, b, n);
    free(b);
}

static void put_st(const char *path, const char *header, size_t data_len) {
    put_st_raw(path, strlen(header), header, data_len);
}

static void st_bad(int line, const char *name, const char *header, size_t data_len,
                   cn_status want, const char *substr) {
    char *path = tpath(name);
    put_st(path, header, data_len);
    cn_st_file *f = (cn_st_file *)1;
    cn_status st = cn_st_open(&f, path);
    expect_err(line, name, st, want, path, substr);
    CHECK(f == NULL, "%s: *out not NULL on failure", name);
    if (st == CN_OK) cn_st_close(f);
    remove(path);
}

#define ST_BAD(name, header, dlen, want, substr) st_bad(__LINE__, name, header, dlen, want, substr)

static void test_st_broken(void) {
    const char *path;
    cn_st_file *f = NULL;
    cn_status st;

    path = tpath("truncated.safetensors");
    write_file(path, "\x10\x00\x00", 3);
    st = cn_st_open(&f, path);
    expect_err(__LINE__, "truncated", st, CN_ERR_FORMAT, path, "too short");

    path = tpath("hlen_big.safetensors");
    put_st_raw(path, 1000, "{}      ", 0);
    st = cn_st_open(&f, path);
    expect_err(__LINE__, "header length > file", st, CN_ERR_FORMAT, path, "exceeds the file");

    path = tpath("hlen_huge.safetensors");
    put_st_raw(path, UINT64_MAX, "{}      ", 0);
    st = cn_st_open(&f, path);
    expect_err(__LINE__, "header length 2^64-1", st, CN_ERR_FORMAT, path, "limit");

    path = tpath("hlen0.safetensors");
    put_st_raw(path, 0, "", 16);
    st = cn_st_open(&f, path);
    expect_err(__LINE__, "header length 0", st, CN_ERR_FORMAT, path, "header length is 0");

    path = tpath("empty.safetensors");
    write_file(path, "", 0);
    st = cn_st_open(&f, path);
    expect_err(__LINE__, "empty file", st, CN_ERR_FORMAT, path, "too short");

    path = tpath("does-not-exist.safetensors");
    st = cn_st_open(&f, path);
    expect_err(__LINE__, "missing file", st, CN_ERR_IO, path, "cannot open");

    st = cn_st_open(&f, tmpdir);
    expect_err(__LINE__, "directory", st, CN_ERR_IO, tmpdir, "not a regular file");

    ST_BAD("badjson", "{\"a\": ", 0, CN_ERR_FORMAT, "not valid JSON");
    ST_BAD("notobject", "[1, 2, 3]", 0, CN_ERR_FORMAT, "not a JSON object");
    ST_BAD("string", "\"hello\"", 0, CN_ERR_FORMAT, "not a JSON object");
    ST_BAD("leading_space", " {}", 0, CN_ERR_FORMAT, "start with '{'");
    ST_BAD("trailing_junk", "{} x", 0, CN_ERR_FORMAT, "after the JSON");
    ST_BAD("two_objects", "{}{}", 0, CN_ERR_FORMAT, "after the JSON");
    ST_BAD("bad_utf8", "{\"\xff\xfe\": {}}", 0, CN_ERR_FORMAT, "UTF-8");
    ST_BAD("ctrl_in_header", "{\"a\":\x01}", 0, CN_ERR_FORMAT, "not valid JSON");
    path = tpath("nul_in_header.safetensors");
    write_file(path, "\x08\0\0\0\0\0\0\0{}\0     ", 16);
    st = cn_st_open(&f, path);
    expect_err(__LINE__, "NUL in header", st, CN_ERR_FORMAT, path, "after the JSON");
    ST_BAD("entry_not_object", "{\"w\": 5}", 0, CN_ERR_FORMAT, "tensor 'w': entry is not");
    ST_BAD("missing_dtype", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
           CN_ERR_FORMAT, "tensor 'w': missing \"dtype\"");
    ST_BAD("missing_shape", "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4,
           CN_ERR_FORMAT, "missing \"shape\"");
    ST_BAD("missing_offsets", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, CN_ERR_FORMAT,
           "missing \"data_offsets\"");
    ST_BAD("dup_field",
           "{\"w\": {\"dtype\": \"F32\", \"dtype\": \"F64\", \"shape\": [1], "
           "\"data_offsets\": [0, 4]}}",
           4, CN_ERR_FORMAT, "appears twice");
    ST_BAD("dtype_not_string", "{\"w\": {\"dtype\": 3, \"shape\": [1], \"data_offsets\": [0, 4]}}",
           4, CN_ERR_FORMAT, "not a string");
    ST_BAD("unknown_dtype",
           "{\"w\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
           CN_ERR_FORMAT, "unknown dtype 'F33'");
    ST_BAD("unsupported_dtype",
           "{\"w\": {\"dtype\": \"U32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
           CN_ERR_UNSUPPORTED, "dtype 'U32' is not supported");
    ST_BAD("shape_not_array",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 4]}}", 4,
           CN_ERR_FORMAT, "\"shape\" is not an array");
    ST_BAD("negative_shape",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4,
           CN_ERR_FORMAT, "shape[0] is negative");
    ST_BAD("fractional_shape",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 1.5], \"data_offsets\": [0, 12]}}", 12,
           CN_ERR_FORMAT, "shape[1] is not an integer");
    ST_BAD("string_shape",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8,
           CN_ERR_FORMAT, "shape[0] is not an integer");
    ST_BAD("huge_dim",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 8]}}", 8,
           CN_ERR_FORMAT, "shape[0] is too large");
    ST_BAD("overflow_shape",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
           "\"data_offsets\": [0, 8]}}",
           8, CN_ERR_FORMAT, "is too large");
    ST_BAD("overflow_shape2",
           "{\"w\": {\"dtype\": \"F64\", \"shape\": [2305843009213693952, 8], "
           "\"data_offsets\": [0, 0]}}",
           0, CN_ERR_FORMAT, "is too large");
    ST_BAD("too_many_dims",
           "{\"w\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], "
           "\"data_offsets\": [0, 1]}}",
           1, CN_ERR_UNSUPPORTED, "9 dimensions");
    ST_BAD("offsets_not_pair",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
           CN_ERR_FORMAT, "not an array of 2");
    ST_BAD("offsets_negative",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4,
           CN_ERR_FORMAT, "begin is negative");
    ST_BAD("offsets_out_of_range",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [100], \"data_offsets\": [0, 400]}}", 4,
           CN_ERR_FORMAT, "data_offsets [0, 400] reach past the data region (4 bytes)");
    ST_BAD("offsets_reversed",
           "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8,
           CN_ERR_FORMAT, "end before they begin");
    ST_BAD("offsets_mismatch",
           "{\"fc.weight\": {\"dtype\": \"F32\", \"shape\": [10, 64], \"data_offsets\": [0, 100]}}",
           100, CN_ERR_FORMAT,
           "tensor 'fc.weight': data_offsets [0, 100] do not match shape [10, 64] of F32 "
           "(2560 bytes)");
    ST_BAD("overlap",
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
           " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
           12, CN_ERR_FORMAT, "overlap");
    ST_BAD("same_offsets",
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
           " \"b\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
           8, CN_ERR_FORMAT, "overlap");
    ST_BAD("gap",
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
           " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
           12, CN_ERR_FORMAT, "bytes [4, 8) of the data region belong to no tensor");
    ST_BAD("gap_at_start",
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
           CN_ERR_FORMAT, "bytes [0, 4)");
    ST_BAD("trailing_data",
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 9,
           CN_ERR_FORMAT, "bytes [4, 9)");
    ST_BAD("data_without_tensors", "{}", 4, CN_ERR_FORMAT, "bytes [0, 4)");
    ST_BAD("meta_not_map", "{\"__metadata__\": {\"k\": 1}}", 0, CN_ERR_FORMAT,
           "metadata 'k' is not a string");
    ST_BAD("meta_nested", "{\"__metadata__\": {\"k\": {\"x\": \"y\"}}}", 0, CN_ERR_FORMAT,
           "not a string");
    ST_BAD("meta_array", "{\"__metadata__\": [\"a\"]}", 0, CN_ERR_FORMAT,
           "\"__metadata__\" is not a JSON object");
    ST_BAD("meta_dup_key", "{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}}", 0, CN_ERR_FORMAT,
           "appears twice");
    ST_BAD("meta_twice", "{\"__metadata__\": {}, \"__metadata__\": {}}", 0, CN_ERR_FORMAT,
           "appears twice");
    ST_BAD("dup_tensor",
           "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
           " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
           8, CN_ERR_FORMAT, "tensor name 'a' appears twice");
    ST_BAD("nul_escape",
           "{\"a\\u0000b\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
           CN_ERR_FORMAT, "\\u0000");
    ST_BAD("control_char_name",
           "{\"a\\u0001b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
           CN_ERR_FORMAT, "tensor 'a\\x01b'");

    /* Fine as files, but corner cases of the checks above. */
    path = tpath("corner.safetensors");
    put_st(path,
           "{\"__metadata__\": null, \"e\": {\"dtype\": \"F32\", \"shape\": [0, 5], "
           "\"data_offsets\": [0, 0]}, \"s\": {\"dtype\": \"I8\", \"shape\": [], "
           "\"data_offsets\": [0, 1]}, \"z\": {\"dtype\": \"U8\", \"shape\": "
           "[0, 4294967296, 4294967296, 4294967296], \"data_offsets\": [1, 1]}, "
           "\"x\\\\u0000y\": {\"dtype\": \"BOOL\", \"shape\": [1], \"data_offsets\": [1, 2], "
           "\"note\": \"unknown fields are ignored\"}}\n\t ",
           2);
    st = cn_st_open(&f, path);
    CHECK(st == CN_OK, "corner cases: %s", cn_errmsg());
    if (st == CN_OK) {
        CHECK(cn_st_count(f) == 4, "corner: count %d", cn_st_count(f));
        const cn_st_tensor *s = cn_st_find(f, "s");
        CHECK(s && s->ndim == 0 && s->nbytes == 1, "corner: scalar");
        const cn_st_tensor *e = cn_st_find(f, "e");
        CHECK(e && e->nbytes == 0 && e->ndim == 2, "corner: empty tensor");
        CHECK(cn_st_meta_count(f) == 0, "corner: null metadata");
        CHECK(cn_st_find(f, "x\\u0000y") != NULL, "corner: escaped backslash before u0000");
        cn_st_close(f);
    }
}

/* ---- safetensors: round trip --------------------------------------------------------------- */

static void test_st_roundtrip(void) {
    float f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -1e30f};
    double f64[4] = {1.0, -0.5, 1e300, 3.0e-5};
    uint16_t f16[6] = {0x3c00, 0xc000, 0x3800, 0x0001, 0x7c00, 0xfbff};
    float f16_want[6] = {1.0f, -2.0f, 0.5f, 5.9604644775390625e-8f, INFINITY, -65504.0f};
    uint16_t bf16[2] = {0x3f80, 0xc040};
    float bf16_want[2] = {1.0f, -3.0f};
    int64_t i64[4] = {INT64_MIN, -1, 0, INT64_MAX};
    int32_t i32[5] = {1, -2, 3, -4, 5};
    int16_t i16[1] = {-300};
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[8] = {0, 1, 2, 3, 252, 253, 254, 255};
    uint8_t bools[4] = {1, 0, 0, 1};
    float scalar = 42.0f;

    struct {
        const char *name;
        cn_dtype dt;
        int ndim;
        int64_t shape[4];
        const void *data;
    } ts[] = {
        {"layer1.weight", CN_DT_F32, 2, {2, 3}, f32},
        {"f64", CN_DT_F64, 1, {4}, f64},
        {"half", CN_DT_F16, 1, {6}, f16},
        {"bf", CN_DT_BF16, 2, {1, 2}, bf16},
        {"ints64", CN_DT_I64, 2, {2, 2}, i64},
        {"ints32", CN_DT_I32, 1, {5}, i32},
        {"ints16", CN_DT_I16, 3, {1, 1, 1}, i16},
        {"ints8", CN_DT_I8, 1, {3}, i8},
        {"bytes \"quoted\" \xc3\xbc", CN_DT_U8, 3, {2, 2, 2}, u8},
        {"mask", CN_DT_BOOL, 1, {4}, bools},
        {"scalar", CN_DT_F32, 0, {0}, &scalar},
        {"empty", CN_DT_F32, 2, {0, 5}, NULL},
    };
    int nts = (int)(sizeof ts / sizeof ts[0]);

    cn_st_writer *w = NULL;
    CHECK(cn_st_writer_new(&w) == CN_OK, "writer_new");
    for (int i = 0; i < nts; i++) {
        cn_status st = cn_st_writer_add(w, ts[i].name, ts[i].dt, ts[i].ndim, ts[i].shape,
                                        ts[i].data);
        CHECK(st == CN_OK, "add %s: %s", ts[i].name, cn_errmsg());
    }
    CHECK(cn_st_writer_meta(w, "format", "pt") == CN_OK, "meta");
    CHECK(cn_st_writer_meta(w, "note", "old") == CN_OK, "meta");
    CHECK(cn_st_writer_meta(w, "note", "a \"b\" \\ c\nd\x01 \xc3\xa9") == CN_OK, "meta replace");

    int64_t shp[2] = {2, 3}, negshape[1] = {-1};
    CHECK(cn_st_writer_add(w, "ints8", CN_DT_I8, 1, shp, i8) == CN_ERR_ARG, "dup name accepted");
    CHECK(cn_st_writer_add(w, "__metadata__", CN_DT_I8, 1, shp, i8) == CN_ERR_ARG,
          "__metadata__ accepted as a tensor name");
    CHECK(cn_st_writer_add(w, "neg", CN_DT_I8, 1, negshape, i8) == CN_ERR_ARG, "negative dim");
    CHECK(cn_st_writer_add(w, "deep", CN_DT_I8, 9, shp, i8) == CN_ERR_ARG, "ndim 9");
    CHECK(cn_st_writer_add(w, "nodata", CN_DT_I8, 2, shp, NULL) == CN_ERR_ARG, "NULL data");
    CHECK(cn_st_writer_add(w, "baddt", (cn_dtype)99, 2, shp, i8) == CN_ERR_ARG, "bad dtype");
    CHECK(cn_st_writer_add(w, "bad\xff", CN_DT_I8, 2, shp, i8) == CN_ERR_ARG, "bad UTF-8 name");

    const char *path = tpath("roundtrip.safetensors");
    cn_status st = cn_st_writer_save(w, path);
    CHECK(st == CN_OK, "save: %s", cn_errmsg());
    cn_st_writer_free(w);

    size_t flen = 0;
    unsigned char *raw = read_whole(path, &flen);
    CHECK(raw && flen > 8, "read back raw");
    if (raw && flen > 8) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
        CHECK(hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
        CHECK(raw[8] == '{', "header starts with '{'");
        CHECK(hl + 8 <= flen && (raw[8 + hl - 1] == ' ' || raw[8 + hl - 1] == '}'),
              "header ends with '}' or padding");
    }

    cn_st_file *f = NULL;
    st = cn_st_open(&f, path);
    CHECK(st == CN_OK, "open written file: %s", cn_errmsg());
    if (st == CN_OK) {
        CHECK(strcmp(cn_st_path(f), path) == 0, "path");
        CHECK(cn_st_count(f) == nts, "count %d, want %d", cn_st_count(f), nts);
        for (int i = 0; i < nts && i < cn_st_count(f); i++) {
            const cn_st_tensor *t = cn_st_at(f, i);
            CHECK(strcmp(t->name, ts[i].name) == 0, "order: %d is %s, want %s", i, t->name,
                  ts[i].name);
            CHECK(t->dtype == ts[i].dt, "%s: dtype", ts[i].name);
            CHECK(t->ndim == ts[i].ndim, "%s: ndim", ts[i].name);
            size_t n = cn_dtype_size(ts[i].dt);
            for (int d = 0; d < ts[i].ndim; d++) {
                CHECK(t->shape[d] == ts[i].shape[d], "%s: shape[%d]", ts[i].name, d);
                n *= (size_t)ts[i].shape[d];
            }
            CHECK(t->nbytes == n, "%s: nbytes %zu, want %zu", ts[i].name, t->nbytes, n);
            CHECK(n == 0 || memcmp(t->data, ts[i].data, n) == 0, "%s: bytes differ", ts[i].name);
            CHECK(cn_st_find(f, ts[i].name) == t, "find %s", ts[i].name);
        }
        CHECK(((uintptr_t)cn_st_at(f, 0)->data & 7) == 0, "data region not 8-byte aligned");
        CHECK(cn_st_at(f, -1) == NULL && cn_st_at(f, nts) == NULL, "cn_st_at out of range");
        CHECK(cn_st_find(f, "nope") == NULL, "find absent");
        CHECK(cn_st_meta(f, "format") && strcmp(cn_st_meta(f, "format"), "pt") == 0,
              "meta format");
        CHECK(cn_st_meta(f, "note") &&
                  strcmp(cn_st_meta(f, "note"), "a \"b\" \\ c\nd\x01 \xc3\xa9") == 0,
              "meta note escaping");
        CHECK(cn_st_meta(f, "absent") == NULL, "meta absent");
        CHECK(cn_st_meta_count(f) == 2, "meta count");

        float out[6];
        st = cn_st_read_f32(f, cn_st_find(f, "layer1.weight"), out, 6);
        CHECK(st == CN_OK && memcmp(out, f32, sizeof f32) == 0, "read_f32 F32");
        st = cn_st_read_f32(f, cn_st_find(f, "half"), out, 6);
        CHECK(st == CN_OK, "read_f32 F16: %s", cn_errmsg());
        for (int i = 0; i < 6; i++)
            CHECK(out[i] == f16_want[i], "F16[%d] = %g, want %g", i, out[i], f16_want[i]);
        st = cn_st_read_f32(f, cn_st_find(f, "bf"), out, 2);
        CHECK(st == CN_OK && out[0] == bf16_want[0] && out[1] == bf16_want[1], "read_f32 BF16");
        st = cn_st_read_f32(f, cn_st_find(f, "f64"), out, 4);
        CHECK(st == CN_OK && out[0] == 1.0f && out[1] == -0.5f && isinf(out[2]) &&
                  out[3] == (float)3.0e-5,
              "read_f32 F64");
        st = cn_st_read_f32(f, cn_st_find(f, "scalar"), out, 1);
        CHECK(st == CN_OK && out[0] == 42.0f, "read_f32 scalar");
        st = cn_st_read_f32(f, cn_st_find(f, "empty"), NULL, 0);
        CHECK(st == CN_OK, "read_f32 empty");
        st = cn_st_read_f32(f, cn_st_find(f, "layer1.weight"), out, 5);
        expect_err(__LINE__, "read_f32 count", st, CN_ERR_SHAPE, path, "6 elements");
        st = cn_st_read_f32(f, cn_st_find(f, "ints32"), out, 5);
        expect_err(__LINE__, "read_f32 int", st, CN_ERR_UNSUPPORTED, path, "not a float");
        cn_st_tensor fake = *cn_st_find(f, "ints32");
        st = cn_st_read_f32(f, &fake, out, 5);
        CHECK(st == CN_ERR_ARG, "read_f32 foreign tensor");
        cn_st_close(f);
    }

    /* The same bytes through the in-memory entry point. */
    if (raw) {
        st = cn_st_open_memory(&f, "mem.safetensors", raw, flen);
        CHECK(st == CN_OK && cn_st_count(f) == nts, "open_memory: %s", cn_errmsg());
        if (st == CN_OK) cn_st_close(f);
        st = cn_st_open_memory(&f, "mem.safetensors", raw, flen - 1);
        expect_err(__LINE__, "open_memory truncated", st, CN_ERR_FORMAT, "mem.safetensors",
                   "reach past the data region");
        st = cn_st_open_memory(&f, "mem.safetensors", raw, 20);
        expect_err(__LINE__, "open_memory cut header", st, CN_ERR_FORMAT, "mem.safetensors",
                   "exceeds the file size");
    }
    free(raw);

    /* An unaligned header still yields aligned data in memory. */
    path = tpath("unaligned.safetensors");
    {
        const char *hdr = "{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
        size_t hl = strlen(hdr);
        unsigned char buf[256] = {0};
        buf[0] = (unsigned char)hl;
        memcpy(buf + 8, hdr, hl);
        double v = -7.5;
        memcpy(buf + 8 + hl, &v, 8);
        write_file(path, buf, 8 + hl + 8);
        st = cn_st_open(&f, path);
        CHECK(st == CN_OK, "unaligned header (%zu): %s", hl, cn_errmsg());
        if (st == CN_OK) {
            const cn_st_tensor *t = cn_st_at(f, 0);
            CHECK(((uintptr_t)t->data & 7) == 0 && *(const double *)t->data == -7.5,
                  "unaligned header: data");
            cn_st_close(f);
        }
    }

    /* Empty writer: a valid file with no tensors. */
    CHECK(cn_st_writer_new(&w) == CN_OK, "writer_new");
    path = tpath("empty_ok.safetensors");
    CHECK(cn_st_writer_save(w, path) == CN_OK, "save empty: %s", cn_errmsg());
    cn_st_writer_free(w);
    st = cn_st_open(&f, path);
    CHECK(st == CN_OK && cn_st_count(f) == 0, "open empty: %s", cn_errmsg());
    if (st == CN_OK) cn_st_close(f);
    cn_st_close(NULL);
    cn_st_writer_free(NULL);
}

/* ---- safetensors: atomic save -------------------------------------------------------------- */

static int count_tmp_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static cn_st_writer *make_writer(const void *data, int64_t n) {
    cn_st_writer *w = NULL;
    if (cn_st_writer_new(&w) != CN_OK) return NULL;
    cn_st_writer_add(w, "w", CN_DT_U8, 1, &n, data);
    return w;
}

static int file_equals(const char *path, const unsigned char *want, size_t n) {
    size_t len = 0;
    unsigned char *b = read_whole(path, &len);
    int eq = b && len == n && memcmp(b, want, n) == 0;
    free(b);
    return eq;
}

static void test_st_atomic(void) {
    const char *path = tpath("model.safetensors");
    static unsigned char v1[100], v2[1 << 16];
    memset(v1, 0x11, sizeof v1);
    memset(v2, 0x22, sizeof v2);

    cn_st_writer *w = make_writer(v1, sizeof v1);
    CHECK(w && cn_st_writer_save(w, path) == CN_OK, "save v1: %s", cn_errmsg());
    cn_st_writer_free(w);
    size_t olen = 0;
    unsigned char *orig = read_whole(path, &olen);
    CHECK(orig != NULL, "read v1");
    if (!orig) return;

    w = make_writer(v2, sizeof v2);

    /* The temporary name is taken: the save must fail and leave that entry alone. */
    char tmpname[600];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
    mkdir(tmpname, 0700);
    cn_status st = cn_st_writer_save(w, path);
    expect_err(__LINE__, "temp name taken", st, CN_ERR_IO, path, "temporary");
    CHECK(file_equals(path, orig, olen), "old file changed after failed save (temp taken)");
    struct stat sb;
    CHECK(stat(tmpname, &sb) == 0 && S_ISDIR(sb.st_mode), "someone else's temp entry removed");
    rmdir(tmpname);

    /* A write that fails midway (file size limit): old file intact, temp file gone. */
    struct rlimit old_lim, lim;
    getrlimit(RLIMIT_FSIZE, &old_lim);
    lim = old_lim;
    lim.rlim_cur = 4096;
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        st = cn_st_writer_save(w, path);
        setrlimit(RLIMIT_FSIZE, &old_lim);
        expect_err(__LINE__, "write fails", st, CN_ERR_IO, path, "write");
        CHECK(file_equals(path, orig, olen), "old file changed after failed write");
        CHECK(count_tmp_files() == 0, "temp file left after failed write");
    } else {
        printf("note: setrlimit failed (%s); skipping the failing-write case\n", strerror(errno));
    }
    signal(SIGXFSZ, old_sig);

    /* The rename fails (the target is a non-empty directory): temp file removed. */
    const char *dpath = tpath("adir");
    mkdir(dpath, 0700);
    const char *inner = tpath("adir/keep");
    write_file(inner, "x", 1);
    st = cn_st_writer_save(w, dpath);
    expect_err(__LINE__, "rename fails", st, CN_ERR_IO, dpath, "rename");
    CHECK(count_tmp_files() == 0, "temp file left after failed rename");
    CHECK(access(inner, F_OK) == 0, "directory contents touched");
    remove(inner);
    rmdir(dpath);

    /* A directory that does not exist. */
    const char *npath = tpath("no/such/dir/x.safetensors");
    st = cn_st_writer_save(w, npath);
    expect_err(__LINE__, "missing directory", st, CN_ERR_IO, npath, "No such file");

    /* Finally a save that works replaces the file. */
    st = cn_st_writer_save(w, path);
    CHECK(st == CN_OK, "save v2: %s", cn_errmsg());
    CHECK(count_tmp_files() == 0, "temp file left after successful save");
    cn_st_file *f = NULL;
    st = cn_st_open(&f, path);
    CHECK(st == CN_OK && cn_st_at(f, 0)->nbytes == sizeof v2 &&
              memcmp(cn_st_at(f, 0)->data, v2, sizeof v2) == 0,
          "v2 contents: %s", cn_errmsg());
    cn_st_close(f);
    cn_st_writer_free(w);
    free(orig);
}

/* ---- IDX ----------------------------------------------------------------------------------- */

static size_t make_idx(unsigned char *buf, int type, int ndim, const uint32_t *dims,
                       size_t ndata) {
    size_t o = 0;
    buf[o++] = 0;
    buf[o++] = 0;
    buf[o++] = (unsigned char)type;
    buf[o++] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[o++] = (unsigned char)(dims[i] >> 24);
        buf[o++] = (unsigned char)(dims[i] >> 16);
        buf[o++] = (unsigned char)(dims[i] >> 8);
        buf[o++] = (unsigned char)dims[i];
    }
    for (size_t i = 0; i < ndata; i++) buf[o++] = (unsigned char)(i * 7 + 3);
    return o;
}

static void idx_bad(int line, const char *name, const unsigned char *bytes, size_t n, int gz,
                    cn_status want, const char *substr) {
    char *path = tpath(name);
    if (gz)
        write_gz(path, bytes, n);
    else
        write_file(path, bytes, n);
    cn_idx x;
    cn_status st = cn_idx_load(&x, path);
    expect_err(line, name, st, want, path, substr);
    CHECK(x.data == NULL && x.count == 0, "%s: output not empty on failure", name);
    if (st == CN_OK) cn_idx_free(&x);
}

static void test_idx(void) {
    unsigned char buf[4096];
    uint32_t d3[3] = {2, 3, 4};
    size_t n = make_idx(buf, 0x08, 3, d3, 24);

    for (int gz = 0; gz < 2; gz++) {
        const char *path = tpath(gz ? "ok.idx.gz" : "ok.idx");
        if (gz)
            write_gz(path, buf, n);
        else
            write_file(path, buf, n);
        cn_idx x;
        cn_status st = cn_idx_load(&x, path);
        CHECK(st == CN_OK, "idx load %s: %s", path, cn_errmsg());
        if (st == CN_OK) {
            CHECK(x.ndim == 3 && x.dims[0] == 2 && x.dims[1] == 3 && x.dims[2] == 4 &&
                      x.count == 24 && x.type == CN_IDX_UBYTE,
                  "idx dims (%s)", path);
            CHECK(memcmp(x.data, buf + 16, 24) == 0, "idx data (%s)", path);
            cn_idx_free(&x);
            CHECK(x.data == NULL, "idx_free clears");
        }
    }
    uint32_t d1[1] = {5};
    n = make_idx(buf, 0x09, 1, d1, 5);
    {
        const char *path = tpath("signed.idx");
        write_file(path, buf, n);
        cn_idx x;
        CHECK(cn_idx_load(&x, path) == CN_OK && x.type == CN_IDX_SBYTE && x.count == 5,
              "signed idx: %s", cn_errmsg());
        cn_idx_free(&x);
    }

    n = make_idx(buf, 0x08, 3, d3, 24);
    unsigned char bad[4096];
    memcpy(bad, buf, n);
    bad[0] = 1;
    idx_bad(__LINE__, "magic.idx", bad, n, 0, CN_ERR_FORMAT, "bad magic");
    memcpy(bad, buf, n);
    bad[2] = 0x0d;
    idx_bad(__LINE__, "float.idx", bad, n, 0, CN_ERR_FORMAT, "0x0d is not supported");
    memcpy(bad, buf, n);
    bad[2] = 0x0d;
    idx_bad(__LINE__, "float.idx.gz", bad, n, 1, CN_ERR_FORMAT, "0x0d is not supported");
    memcpy(bad, buf, n);
    bad[3] = 0;
    idx_bad(__LINE__, "ndim0.idx", bad, n, 0, CN_ERR_FORMAT, "0 dimensions");
    memcpy(bad, buf, n);
    bad[3] = 5;
    idx_bad(__LINE__, "ndim5.idx", bad, n, 0, CN_ERR_FORMAT, "5 dimensions");
    idx_bad(__LINE__, "trunc.idx", buf, n - 1, 0, CN_ERR_FORMAT, "truncated");
    idx_bad(__LINE__, "trunc.idx.gz", buf, n - 1, 1, CN_ERR_FORMAT, "truncated");
    idx_bad(__LINE__, "header_only.idx", buf, 9, 0, CN_ERR_FORMAT, "inside the list");
    idx_bad(__LINE__, "tiny.idx", buf, 2, 0, CN_ERR_FORMAT, "too short");
    idx_bad(__LINE__, "empty.idx", buf, 0, 0, CN_ERR_FORMAT, "too short");
    memcpy(bad, buf, n);
    bad[n] = 9;
    idx_bad(__LINE__, "trailing.idx", bad, n + 1, 0, CN_ERR_FORMAT, "trailing bytes");
    idx_bad(__LINE__, "trailing.idx.gz", bad, n + 1, 1, CN_ERR_FORMAT, "trailing bytes");
    uint32_t dz[3] = {2, 0, 4};
    size_t nz = make_idx(bad, 0x08, 3, dz, 0);
    idx_bad(__LINE__, "zerodim.idx", bad, nz, 0, CN_ERR_FORMAT, "dimension 1 is 0");
    uint32_t dh[2] = {65536, 65536};
    size_t nh = make_idx(bad, 0x08, 2, dh, 10);
    idx_bad(__LINE__, "huge.idx", bad, nh, 0, CN_ERR_FORMAT, "more than");
    /* Claims 2^31 - 1 bytes but holds 10: must fail without allocating that much. */
    uint32_t dl[1] = {0x7fffffffu};
    size_t nl = make_idx(bad, 0x08, 1, dl, 10);
    idx_bad(__LINE__, "liar.idx", bad, nl, 0, CN_ERR_FORMAT, "truncated");

    /* A gzip stream cut short, and one with a corrupt body. */
    {
        const char *gpath = tpath("whole.idx.gz");
        static unsigned char big[20000];
        uint32_t db[1] = {19000};
        size_t nb = make_idx(big, 0x08, 1, db, 19000);
        write_gz(gpath, big, nb);
        size_t glen = 0;
        unsigned char *g = read_whole(gpath, &glen);
        if (g && glen > 40) {
            const char *cpath = tpath("cut.idx.gz");
            write_file(cpath, g, glen - 6);
            cn_idx x;
            cn_status st = cn_idx_load(&x, cpath);
            expect_err(__LINE__, "cut gzip", st, CN_ERR_FORMAT, cpath, NULL);
            cn_idx_free(&x);
            g[glen / 2] ^= 0x55;
            g[glen / 2 + 1] ^= 0xaa;
            const char *xpath = tpath("corrupt.idx.gz");
            write_file(xpath, g, glen);
            st = cn_idx_load(&x, xpath);
            expect_err(__LINE__, "corrupt gzip", st, CN_ERR_FORMAT, xpath, NULL);
            cn_idx_free(&x);
        }
        free(g);
    }

    cn_idx x;
    const char *missing = tpath("missing.idx");
    expect_err(__LINE__, "missing idx", cn_idx_load(&x, missing), CN_ERR_IO, missing,
               "cannot open");
    expect_err(__LINE__, "idx directory", cn_idx_load(&x, tmpdir), CN_ERR_IO, tmpdir, NULL);
    cn_idx_free(NULL);
}

/* ---- MNIST --------------------------------------------------------------------------------- */

static void put_mnist(const char *dir, const char *split, int gz, int n, int h, int w,
                      int nlabels, int bad_label_at) {
    static unsigned char buf[1 << 16];
    char path[600];
    uint32_t di[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w};
    size_t len = make_idx(buf, 0x08, 3, di, (size_t)n * h * w);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, split, gz ? ".gz" : "");
    gz ? write_gz(path, buf, len) : write_file(path, buf, len);
    uint32_t dl[1] = {(uint32_t)nlabels};
    len = make_idx(buf, 0x08, 1, dl, 0);
    for (int i = 0; i < nlabels; i++) buf[len++] = (unsigned char)(i % 10);
    if (bad_label_at >= 0) buf[len - nlabels + bad_label_at] = 10;
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, split, gz ? ".gz" : "");
    gz ? write_gz(path, buf, len) : write_file(path, buf, len);
}

static void test_mnist(void) {
    char dir[400];
    snprintf(dir, sizeof dir, "%s/mnist", tmpdir);
    mkdir(dir, 0700);
    put_mnist(dir, "train", 0, 12, 5, 4, 12, -1);
    put_mnist(dir, "t10k", 1, 3, 5, 4, 3, -1);

    cn_mnist m;
    cn_status st = cn_mnist_load(&m, dir, 1);
    CHECK(st == CN_OK, "mnist train: %s", cn_errmsg());
    if (st == CN_OK) {
        CHECK(m.n == 12 && m.h == 5 && m.w == 4 && m.c == 1, "mnist train dims");
        CHECK(m.labels[11] == 1 && m.images[0] == 3 && m.images[1] == 10, "mnist train values");
        cn_mnist_free(&m);
        CHECK(m.images == NULL && m.labels == NULL, "mnist_free clears");
    }
    st = cn_mnist_load(&m, dir, 0);
    CHECK(st == CN_OK && m.n == 3, "mnist test (gz): %s", cn_errmsg());
    cn_mnist_free(&m);

    char bdir[400];
    snprintf(bdir, sizeof bdir, "%s/mnist_bad", tmpdir);
    mkdir(bdir, 0700);
    put_mnist(bdir, "train", 1, 12, 5, 4, 12, 7);
    st = cn_mnist_load(&m, bdir, 1);
    expect_err(__LINE__, "bad label", st, CN_ERR_FORMAT, "train-labels-idx1-ubyte.gz",
               "label 7 is 10");
    CHECK(m.images == NULL && m.labels == NULL, "mnist output empty on failure");
    put_mnist(bdir, "train", 1, 12, 5, 4, 11, -1);
    st = cn_mnist_load(&m, bdir, 1);
    expect_err(__LINE__, "count mismatch", st, CN_ERR_FORMAT, "train-labels", "11 labels for 12");
    st = cn_mnist_load(&m, bdir, 0);
    expect_err(__LINE__, "missing split", st, CN_ERR_IO, bdir, "t10k-images-idx3-ubyte");
    {
        unsigned char buf[64];
        uint32_t d2[2] = {3, 4};
        size_t len = make_idx(buf, 0x08, 2, d2, 12);
        char path[600];
        snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", bdir);
        write_file(path, buf, len);
        st = cn_mnist_load(&m, bdir, 1);
        expect_err(__LINE__, "2-d images", st, CN_ERR_FORMAT, path, "N x H x W");
    }

    const char *real = CN_MNIST_DEFAULT_DIR "/train-images-idx3-ubyte.gz";
    if (access(real, R_OK) != 0) {
        printf("skip: %s not present (install dataset-fashion-mnist to test the real data)\n",
               real);
        return;
    }
    for (int train = 1; train >= 0; train--) {
        st = cn_mnist_load(&m, NULL, train);
        int want = train ? 60000 : 10000;
        CHECK(st == CN_OK, "real Fashion-MNIST (%s): %s", train ? "train" : "test", cn_errmsg());
        if (st != CN_OK) continue;
        CHECK(m.n == want && m.h == 28 && m.w == 28 && m.c == 1, "real dims %d x %d x %d", m.n,
              m.h, m.w);
        int per_class[10] = {0};
        for (int i = 0; i < m.n; i++) per_class[m.labels[i]]++;
        for (int k = 0; k < 10; k++)
            CHECK(per_class[k] == want / 10, "class %d has %d images", k, per_class[k]);
        cn_mnist_free(&m);
    }
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int main(void) {
    verbose = getenv("CN_TEST_VERBOSE") != NULL;
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/cn_test_io.XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        printf("cannot create a temporary directory under %s: %s\n", base, strerror(errno));
        printf("io: 0 passed, 1 failed\n");
        return 1;
    }
    test_st_broken();
    test_st_roundtrip();
    test_st_atomic();
    test_idx();
    test_mnist();
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("io: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
