#include "io/transform.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

int cn_interp_parse(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "bilinear")) return CN_INTERP_BILINEAR;
    if (!strcmp(s, "bicubic")) return CN_INTERP_BICUBIC;
    return -1;
}

const char *cn_interp_name(cn_interp f) { return f == CN_INTERP_BICUBIC ? "bicubic" : "bilinear"; }

/* ---------------------------------------------------------------- PIL's resampling */

/* Pillow 9.4 libImaging/Resample.c: the filters, PRECISION_BITS and the rounding of the fixed-point
 * coefficients, reproduced operation for operation so that results are bit-identical. */
#define PRECISION_BITS (32 - 8 - 2)

static double filter_bilinear(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

static double filter_bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct coeffs {
    int ksize;
    int *bounds;      /* (out, 2): first input index, count */
    int32_t *k;       /* (out, ksize) fixed point */
} coeffs;

static void coeffs_free(coeffs *co) {
    free(co->bounds);
    free(co->k);
}

static cn_status precompute(coeffs *co, int in_size, int out_size, cn_interp f) {
    double (*filter)(double) = f == CN_INTERP_BICUBIC ? filter_bicubic : filter_bilinear;
    double base = f == CN_INTERP_BICUBIC ? 2.0 : 1.0;
    double scale = (double)(float)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = base * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    memset(co, 0, sizeof *co);
    co->ksize = ksize;
    co->bounds = malloc(sizeof(int) * 2 * (size_t)out_size);
    co->k = malloc(sizeof(int32_t) * (size_t)ksize * out_size);
    double *kk = malloc(sizeof(double) * (size_t)ksize);
    if (!co->bounds || !co->k || !kk) {
        free(kk);
        coeffs_free(co);
        return cn_error(CN_ERR_NOMEM, "out of memory for resize coefficients");
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = filter((x + xmin - center + 0.5) * ss);
            kk[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) kk[x] /= ww;
        for (; x < ksize; x++) kk[x] = 0;
        for (x = 0; x < ksize; x++)
            co->k[(size_t)xx * ksize + x] = kk[x] < 0 ? (int32_t)(-0.5 + kk[x] * (1 << PRECISION_BITS))
                                                      : (int32_t)(0.5 + kk[x] * (1 << PRECISION_BITS));
        co->bounds[2 * xx] = xmin;
        co->bounds[2 * xx + 1] = xmax;
    }
    free(kk);
    return CN_OK;
}

static inline uint8_t clip8(int32_t in) {
    if (in >= (1 << PRECISION_BITS << 8)) return 255;
    if (in <= 0) return 0;
    return (uint8_t)(in >> PRECISION_BITS);
}

cn_status cn_resize_u8(uint8_t *dst, const uint8_t *src, int sw, int sh, size_t sstride, int c,
                       int dw, int dh, int ox, int oy, int ow, int oh, cn_interp f) {
    if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || c < 1 || c > 4 || ox < 0 || oy < 0 || ow < 1 ||
        oh < 1 || ox + ow > dw || oy + oh > dh)
        return cn_error(CN_ERR_ARG, "cn_resize_u8: bad sizes (%dx%d -> %dx%d, window %d,%d %dx%d)",
                        sw, sh, dw, dh, ox, oy, ow, oh);
    int need_h = dw != sw, need_v = dh != sh;
    coeffs ch = {0}, cv = {0};
    uint8_t *tmp = NULL;
    cn_status st = CN_OK;
    if (need_h && (st = precompute(&ch, sw, dw, f)) != CN_OK) return st;
    if (need_v && (st = precompute(&cv, sh, dh, f)) != CN_OK) {
        coeffs_free(&ch);
        return st;
    }
    /* source rows that the output window needs */
    int row0 = oy, row1 = oy + oh;
    if (need_v) {
        row0 = cv.bounds[2 * oy];
        row1 = 0;
        for (int yy = oy; yy < oy + oh; yy++)
            if (cv.bounds[2 * yy] + cv.bounds[2 * yy + 1] > row1)
                row1 = cv.bounds[2 * yy] + cv.bounds[2 * yy + 1];
    }
    /* horizontal pass into tmp: (row1 - row0, ow, c), rounded to uint8 as PIL does */
    const uint8_t *mid;
    size_t mstride;
    if (need_h) {
        mstride = (size_t)ow * c;
        tmp = malloc(mstride * (size_t)(row1 - row0));
        if (!tmp) {
            st = cn_error(CN_ERR_NOMEM, "out of memory resizing a %dx%d image", sw, sh);
            goto out;
        }
        for (int y = row0; y < row1; y++) {
            const uint8_t *in = src + sstride * y;
            uint8_t *o = tmp + mstride * (y - row0);
            for (int xx = 0; xx < ow; xx++) {
                int xmin = ch.bounds[2 * (xx + ox)], xn = ch.bounds[2 * (xx + ox) + 1];
                const int32_t *k = ch.k + (size_t)(xx + ox) * ch.ksize;
                for (int b = 0; b < c; b++) {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    const uint8_t *p = in + (size_t)xmin * c + b;
                    for (int x = 0; x < xn; x++) ss += p[(size_t)x * c] * k[x];
                    o[(size_t)xx * c + b] = clip8(ss);
                }
            }
        }
        mid = tmp;
    } else {
        mstride = sstride;
        mid = src + sstride * row0 + (size_t)ox * c;
    }
    /* vertical pass */
    size_t ostride = (size_t)ow * c;
    for (int yy = 0; yy < oh; yy++) {
        uint8_t *o = dst + ostride * yy;
        if (!need_v) {
            memcpy(o, mid + mstride * yy, ostride);
            continue;
        }
        int ymin = cv.bounds[2 * (yy + oy)], yn = cv.bounds[2 * (yy + oy) + 1];
        const int32_t *k = cv.k + (size_t)(yy + oy) * cv.ksize;
        for (size_t xb = 0; xb < ostride; xb++) {
            int32_t ss = 1 << (PRECISION_BITS - 1);
            const uint8_t *p = mid + mstride * (ymin - row0) + xb;
            for (int y = 0; y < yn; y++) ss += p[mstride * y] * k[y];
            o[xb] = clip8(ss);
        }
    }
out:
    free(tmp);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return st;
}

/* ---------------------------------------------------------------- presets */

void cn_resize_shorter(int h, int w, int size, int *nh, int *nw) {
    int s = w <= h ? w : h, l = w <= h ? h : w;
    int nl = (int)((double)size * l / s);
    if (w <= h) *nw = size, *nh = nl;
    else *nh = size, *nw = nl;
}

void cn_preset_for_model(cn_preset *p, const char *name, int default_size) {
    static const struct { const char *name; int resize, crop; cn_interp f; } known[] = {
        /* torchvision 0.14 models/efficientnet.py, the DEFAULT weights of each variant */
        {"efficientnet_b0", 256, 224, CN_INTERP_BICUBIC},
        {"efficientnet_b1", 255, 240, CN_INTERP_BILINEAR},
        {"efficientnet_b2", 288, 288, CN_INTERP_BICUBIC},
        {"efficientnet_b3", 320, 300, CN_INTERP_BICUBIC},
        {"efficientnet_b4", 384, 380, CN_INTERP_BICUBIC},
        {"efficientnet_b5", 456, 456, CN_INTERP_BICUBIC},
        {"efficientnet_b6", 528, 528, CN_INTERP_BICUBIC},
        {"efficientnet_b7", 600, 600, CN_INTERP_BICUBIC},
    };
    static const float mean[3] = CN_IMAGENET_MEAN, std[3] = CN_IMAGENET_STD;
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, std, sizeof std);
    p->interp = CN_INTERP_BILINEAR;
    p->crop = default_size > 0 ? default_size : 224;
    /* 224 -> 256 as torchvision's ResNet weights (ImageClassification(crop_size=224)) */
    p->resize = (int)lround(p->crop / 0.875);
    if (!name) return;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(name, known[i].name)) {
            p->resize = known[i].resize;
            p->crop = known[i].crop;
            p->interp = known[i].f;
            return;
        }
}

/* int(round(d / 2)) in Python: halves go to the even neighbour */
static int half_round_even(int d) {
    int q = d / 2;
    return d % 2 == 0 || q % 2 == 0 ? q : q + 1;
}

cn_status cn_preprocess_eval(float *dst, const cn_image *im, const cn_preset *p) {
    if (p->resize < 1 || p->crop < 1 || p->resize > 16384 || p->crop > 16384)
        return cn_error(CN_ERR_ARG, "resize %d / crop %d out of range [1, 16384]", p->resize,
                        p->crop);
    int nh, nw, C = im->c, S = p->crop;
    cn_resize_shorter(im->h, im->w, p->resize, &nh, &nw);
    if (nh < 1 || nw < 1 || nh > 65536 || nw > 65536)
        return cn_error(CN_ERR_ARG, "resizing a %dx%d image to %d on its shorter side gives "
                        "%dx%d", im->w, im->h, p->resize, nw, nh);
    /* center_crop: pad with black to at least the crop, then crop at the rounded centre */
    int ph = nh > S ? nh : S, pw = nw > S ? nw : S;
    int oy = half_round_even(ph - S) - (S > nh ? (S - nh) / 2 : 0);
    int ox = half_round_even(pw - S) - (S > nw ? (S - nw) / 2 : 0);
    int y0 = oy > 0 ? oy : 0, y1 = oy + S < nh ? oy + S : nh;
    int x0 = ox > 0 ? ox : 0, x1 = ox + S < nw ? ox + S : nw;
    uint8_t *win = malloc((size_t)(y1 - y0) * (x1 - x0) * C);
    if (!win) return cn_error(CN_ERR_NOMEM, "out of memory preprocessing a %dx%d image", im->w, im->h);
    cn_status st = cn_resize_u8(win, im->data, im->w, im->h, (size_t)im->w * C, C, nw, nh, x0, y0,
                                x1 - x0, y1 - y0, p->interp);
    if (st == CN_OK) {
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int sy = y + oy, sx = x + ox;
                int in = sy >= y0 && sy < y1 && sx >= x0 && sx < x1;
                const uint8_t *s = win + ((size_t)(sy - y0) * (x1 - x0) + (sx - x0)) * C;
                float *o = dst + ((size_t)y * S + x) * C;
                for (int c = 0; c < C; c++) {
                    /* convert_image_dtype (v / 255) then normalize ((x - mean) / std), in float */
                    float v = in ? (float)s[c] / 255.0f : 0.0f;
                    o[c] = (v - p->mean[c % 3]) / p->std[c % 3];
                }
            }
    }
    free(win);
    return st;
}

/* ---------------------------------------------------------------- augmentation */

void cn_rrc_params(int H, int W, cn_rng *r, int *oi, int *oj, int *oh, int *ow) {
    const double scale0 = 0.08, scale1 = 1.0, ratio0 = 3.0 / 4.0, ratio1 = 4.0 / 3.0;
    double area = (double)H * W, lr0 = log(ratio0), lr1 = log(ratio1);
    for (int t = 0; t < 10; t++) {
        double target = area * (scale0 + (scale1 - scale0) * cn_rng_uniform(r));
        double aspect = exp(lr0 + (lr1 - lr0) * cn_rng_uniform(r));
        int w = (int)nearbyint(sqrt(target * aspect)), h = (int)nearbyint(sqrt(target / aspect));
        if (0 < w && w <= W && 0 < h && h <= H) {
            *oi = (int)cn_rng_below(r, (uint32_t)(H - h + 1));
            *oj = (int)cn_rng_below(r, (uint32_t)(W - w + 1));
            *oh = h;
            *ow = w;
            return;
        }
    }
    double in_ratio = (double)W / H;
    int w = W, h = H;
    if (in_ratio < ratio0) h = (int)nearbyint(w / ratio0);
    else if (in_ratio > ratio1) w = (int)nearbyint(h * ratio1);
    if (h > H) h = H;
    if (w > W) w = W;
    *oi = (H - h) / 2;
    *oj = (W - w) / 2;
    *oh = h;
    *ow = w;
}

cn_status cn_preprocess_train(float *dst, const cn_image *im, int size, cn_rng *r, int use_flip,
                              const float *mean, const float *std) {
    int i, j, h, w, C = im->c;
    cn_rrc_params(im->h, im->w, r, &i, &j, &h, &w);
    int flip = use_flip ? (int)cn_rng_below(r, 2) : 0;
    uint8_t *tmp = malloc((size_t)size * size * C);
    if (!tmp) return cn_error(CN_ERR_NOMEM, "out of memory for a %dx%d crop", size, size);
    size_t stride = (size_t)im->w * C;
    cn_status st = cn_resize_u8(tmp, im->data + stride * i + (size_t)j * C, w, h, stride, C, size,
                                size, 0, 0, size, size, CN_INTERP_BILINEAR);
    if (st == CN_OK)
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                const uint8_t *s = tmp + ((size_t)y * size + (flip ? size - 1 - x : x)) * C;
                float *o = dst + ((size_t)y * size + x) * C;
                for (int c = 0; c < C; c++) o[c] = ((float)s[c] / 255.0f - mean[c]) / std[c];
            }
    free(tmp);
    return st;
}
