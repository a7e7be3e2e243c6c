#include "io/image.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>

#include "core/status.h"

static cn_status check_dims(const char *name, const char *kind, int64_t w, int64_t h) {
    if (w < 1 || h < 1)
        return cn_error(CN_ERR_FORMAT, "%s: %s image has no pixels (%lldx%lld)", name, kind,
                        (long long)w, (long long)h);
    if (w > CN_IMAGE_MAX_SIDE || h > CN_IMAGE_MAX_SIDE || w * h > CN_IMAGE_MAX_PIXELS)
        return cn_error(CN_ERR_FORMAT,
                        "%s: %s image is %lldx%lld, larger than convnet accepts (%d per side, "
                        "%lld pixels)",
                        name, kind, (long long)w, (long long)h, CN_IMAGE_MAX_SIDE,
                        (long long)CN_IMAGE_MAX_PIXELS);
    return CN_OK;
}

/* ---------------------------------------------------------------- JPEG */

/* libjpeg's default error handler prints and calls exit(); this one jumps back instead. */
typedef struct jpeg_err {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_fail(j_common_ptr ci) {
    jpeg_err *e = (jpeg_err *)ci->err;
    (*ci->err->format_message)(ci, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings about corrupt entropy data are ignored as PIL ignores them, but running out of data
 * is an error (PIL: "image file is truncated"), not a picture padded with gray. */
static void jpeg_message(j_common_ptr ci, int level) {
    if (level < 0 && ci->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_err *e = (jpeg_err *)ci->err;
        snprintf(e->msg, sizeof e->msg, "truncated file (premature end of JPEG data)");
        longjmp(e->jb, 1);
    }
}

static void jpeg_silent(j_common_ptr ci) { (void)ci; }

static cn_status decode_jpeg(cn_image *out, const uint8_t *buf, size_t len, const char *name,
                             int header_only) {
    struct jpeg_decompress_struct ci;
    jpeg_err je;
    uint8_t *volatile pix = NULL;
    memset(&ci, 0, sizeof ci);
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jpeg_fail;
    je.pub.emit_message = jpeg_message;
    je.pub.output_message = jpeg_silent;
    if (setjmp(je.jb)) {
        jpeg_destroy_decompress(&ci);
        free(pix);
        return cn_error(CN_ERR_FORMAT, "%s: bad JPEG: %s", name, je.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, buf, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    cn_status st = check_dims(name, "JPEG", ci.image_width, ci.image_height);
    int c = 0;
    if (st == CN_OK) {
        switch (ci.jpeg_color_space) {
        case JCS_GRAYSCALE: c = 1; ci.out_color_space = JCS_GRAYSCALE; break;
        case JCS_YCbCr:
        case JCS_RGB: c = 3; ci.out_color_space = JCS_RGB; break;
        default:
            st = cn_error(CN_ERR_UNSUPPORTED, "%s: JPEG colour space %d (CMYK/YCCK) is not "
                          "supported; convert it to RGB", name, (int)ci.jpeg_color_space);
        }
    }
    if (st != CN_OK || header_only) {
        if (st == CN_OK) {
            out->w = (int)ci.image_width;
            out->h = (int)ci.image_height;
            out->c = c;
        }
        jpeg_destroy_decompress(&ci);
        return st;
    }
    jpeg_start_decompress(&ci);
    if ((int)ci.output_components != c || ci.output_width != ci.image_width ||
        ci.output_height != ci.image_height) {
        jpeg_destroy_decompress(&ci);
        return cn_error(CN_ERR_INTERNAL, "%s: libjpeg gave %u components at %ux%u", name,
                        (unsigned)ci.output_components, ci.output_width, ci.output_height);
    }
    size_t stride = (size_t)ci.output_width * c;
    pix = malloc(stride * ci.output_height);
    if (!pix) {
        jpeg_destroy_decompress(&ci);
        return cn_error(CN_ERR_NOMEM, "%s: out of memory for a %ux%u image", name,
                        ci.output_width, ci.output_height);
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW row = pix + stride * ci.output_scanline;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    jpeg_finish_decompress(&ci);
    out->w = (int)ci.output_width;
    out->h = (int)ci.output_height;
    out->c = c;
    out->data = pix;
    jpeg_destroy_decompress(&ci);
    return CN_OK;
}

/* ---------------------------------------------------------------- PNG */

typedef struct png_src {
    const uint8_t *buf;
    size_t len, pos;
    jmp_buf jb;
    char msg[256];
} png_src;

static void png_fail(png_structp p, png_const_charp msg) {
    png_src *s = png_get_error_ptr(p);
    snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "?");
    longjmp(s->jb, 1);
}

static void png_warn(png_structp p, png_const_charp msg) {
    (void)p;
    (void)msg;
}

static void png_read_mem(png_structp p, png_bytep dst, png_size_t n) {
    png_src *s = png_get_io_ptr(p);
    if (n > s->len - s->pos) png_error(p, "truncated file");
    memcpy(dst, s->buf + s->pos, n);
    s->pos += n;
}

static cn_status decode_png(cn_image *out, const uint8_t *buf, size_t len, const char *name,
                            int header_only) {
    png_src src;
    memset(&src, 0, sizeof src);
    src.buf = buf;
    src.len = len;
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_warn);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!p || !info) {
        png_destroy_read_struct(&p, NULL, NULL);
        return cn_error(CN_ERR_NOMEM, "%s: out of memory for the PNG decoder", name);
    }
    uint8_t *volatile pix = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(src.jb)) {
        png_destroy_read_struct(&p, &info, NULL);
        free(pix);
        free(rows);
        return cn_error(CN_ERR_FORMAT, "%s: bad PNG: %s", name, src.msg);
    }
    /* libpng's own limit is above ours, so that check_dims words the refusal */
    png_set_user_limits(p, 1000000, 1000000);
    png_set_read_fn(p, &src, png_read_mem);
    png_read_info(p, info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(p, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    cn_status st = check_dims(name, "PNG", w, h);
    if (st != CN_OK) {
        png_destroy_read_struct(&p, &info, NULL);
        return st;
    }
    /* what PIL's convert("RGB") keeps: 8 bits (16-bit samples cut to the high byte), palette
     * colours, no alpha */
    if (depth == 16) png_set_strip_16(p);
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(p);
    png_set_strip_alpha(p);
    if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(p);
    png_read_update_info(p, info);
    int c = png_get_channels(p, info);
    if ((c != 1 && c != 3) || png_get_bit_depth(p, info) != 8 ||
        png_get_rowbytes(p, info) != (size_t)w * c) {
        png_destroy_read_struct(&p, &info, NULL);
        return cn_error(CN_ERR_UNSUPPORTED, "%s: PNG colour type %d depth %d not supported", name,
                        ctype, depth);
    }
    if (header_only) {
        out->w = (int)w;
        out->h = (int)h;
        out->c = c;
        png_destroy_read_struct(&p, &info, NULL);
        return CN_OK;
    }
    size_t stride = (size_t)w * c;
    pix = malloc(stride * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!pix || !rows) {
        png_destroy_read_struct(&p, &info, NULL);
        free(pix);
        free(rows);
        return cn_error(CN_ERR_NOMEM, "%s: out of memory for a %ux%u image", name, (unsigned)w,
                        (unsigned)h);
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pix + stride * y;
    png_read_image(p, rows);
    png_destroy_read_struct(&p, &info, NULL);
    free(rows);
    out->w = (int)w;
    out->h = (int)h;
    out->c = c;
    out->data = pix;
    return CN_OK;
}

/* ---------------------------------------------------------------- files */

static cn_status decode_any(cn_image *out, const uint8_t *buf, size_t len, const char *name,
                            int header_only) {
    memset(out, 0, sizeof *out);
    if (len == 0) return cn_error(CN_ERR_FORMAT, "%s: empty file (0 bytes), not an image", name);
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF)
        return decode_jpeg(out, buf, len, name, header_only);
    if (len >= 8 && png_sig_cmp(buf, 0, 8) == 0) return decode_png(out, buf, len, name, header_only);
    return cn_error(CN_ERR_FORMAT, "%s: not a JPEG or PNG image (unrecognised signature)", name);
}

cn_status cn_image_decode(cn_image *out, const uint8_t *buf, size_t len, const char *name) {
    if (!out) return cn_error(CN_ERR_ARG, "cn_image_decode: out is NULL");
    if (!buf && len) return cn_error(CN_ERR_ARG, "cn_image_decode: buf is NULL");
    return decode_any(out, buf, len, name ? name : "(image)", 0);
}

static cn_status read_file(const char *path, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cn_error(CN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return cn_error(CN_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > CN_IMAGE_MAX_FILE) {
        close(fd);
        return cn_error(CN_ERR_FORMAT, "%s: %lld bytes, more than an image may have here", path,
                        (long long)sb.st_size);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        close(fd);
        return cn_error(CN_ERR_NOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            free(p);
            close(fd);
            return cn_error(CN_ERR_IO, "%s: read failed: %s", path, r < 0 ? strerror(e) : "file shrank");
        }
        got += (size_t)r;
    }
    close(fd);
    *buf = p;
    *len = n;
    return CN_OK;
}

cn_status cn_image_load(cn_image *out, const char *path) {
    if (!out) return cn_error(CN_ERR_ARG, "cn_image_load: out is NULL");
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t len;
    CN_TRY(read_file(path, &buf, &len));
    cn_status st = decode_any(out, buf, len, path, 0);
    free(buf);
    return st;
}

cn_status cn_image_probe(const char *path, int *w, int *h) {
    cn_image im;
    uint8_t *buf;
    size_t len;
    CN_TRY(read_file(path, &buf, &len));
    cn_status st = decode_any(&im, buf, len, path, 1);
    free(buf);
    if (st == CN_OK) {
        if (w) *w = im.w;
        if (h) *h = im.h;
    }
    return st;
}

void cn_image_free(cn_image *im) {
    if (!im) return;
    free(im->data);
    memset(im, 0, sizeof *im);
}

int cn_image_has_ext(const char *name) {
    static const char *const ext[] = {".jpg", ".jpeg", ".png"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t e = strlen(ext[i]);
        if (n >= e && strcasecmp(name + n - e, ext[i]) == 0) return 1;
    }
    return 0;
}

cn_status cn_image_to_channels(cn_image *im, int c) {
    if (c != 1 && c != 3) return cn_error(CN_ERR_ARG, "images have 1 or 3 channels, not %d", c);
    if (im->c == c) return CN_OK;
    size_t n = (size_t)im->w * im->h;
    uint8_t *d = malloc(n * c);
    if (!d) return cn_error(CN_ERR_NOMEM, "out of memory converting a %dx%d image", im->w, im->h);
    if (c == 3) {
        for (size_t i = 0; i < n; i++) d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = im->data[i];
    } else {
        for (size_t i = 0; i < n; i++) {
            const uint8_t *s = im->data + 3 * i;
            d[i] = (uint8_t)((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16);
        }
    }
    free(im->data);
    im->data = d;
    im->c = c;
    return CN_OK;
}
