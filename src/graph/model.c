/* The public model handle: architecture + graph + the last forward's bookkeeping. */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "graph/model.h"
#include "compress/qat.h"
#include "compress/qnet.h"
#include "io/safetensors.h"

#define FORMAT_NAME "convnet"
#define FORMAT_VERSION "1"

void cn_model_config_default(cn_model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->name = "resnet18";
    cfg->dropout = -1.0f;
    cfg->stochastic_depth = -1.0f;
}

const char *cn_model_list(void) { return cn_model_names(); }

static int default_threads(void) {
    int t = omp_get_num_procs();
    return t > 0 ? t : 1;
}

/* The EfficientNet options of a config, checked and applied to the architecture. */
static cn_status apply_effnet_options(cn_arch *a, const cn_model_config *cfg) {
    int effnet = a->family == CN_FAMILY_EFFICIENTNET, generic = !strcmp(a->name, "efficientnet");
    int scaled = cfg->phi != 0 || cfg->width_mult != 0 || cfg->depth_mult != 0;
    if (!effnet && (scaled || cfg->resolution || cfg->dropout >= 0 || cfg->stochastic_depth >= 0))
        return cn_error(CN_ERR_ARG,
                        "phi, width/depth multipliers, resolution, dropout and stochastic depth "
                        "apply to EfficientNets, not to %s",
                        a->name);
    if (scaled && !generic)
        return cn_error(CN_ERR_ARG,
                        "%s has fixed multipliers; compound scaling (phi, width and depth "
                        "multipliers) applies to the model 'efficientnet'",
                        a->name);
    if (cfg->phi != 0 && (cfg->width_mult != 0 || cfg->depth_mult != 0))
        return cn_error(CN_ERR_ARG, "give either phi or width/depth multipliers, not both");
    if (cfg->phi != 0) {
        if (!(cfg->phi >= -10 && cfg->phi <= 12))
            return cn_error(CN_ERR_ARG, "phi %g is out of range [-10, 12]", cfg->phi);
        cn_effnet_phi(cfg->phi, &a->width_mult, &a->depth_mult, &a->default_size);
    }
    if (cfg->width_mult != 0) a->width_mult = cfg->width_mult;
    if (cfg->depth_mult != 0) a->depth_mult = cfg->depth_mult;
    if (cfg->resolution) {
        if (cfg->resolution < 1 || cfg->resolution > 16384)
            return cn_error(CN_ERR_ARG, "resolution %d is out of range [1, 16384]", cfg->resolution);
        a->default_size = cfg->resolution;
    }
    if (cfg->dropout >= 0) a->dropout = cfg->dropout;
    if (cfg->stochastic_depth >= 0) a->stochastic_depth = cfg->stochastic_depth;
    if (effnet && (!(a->width_mult >= 0.05 && a->width_mult <= 16) ||
                   !(a->depth_mult >= 0.05 && a->depth_mult <= 16)))
        return cn_error(CN_ERR_ARG,
                        "width multiplier %g and depth multiplier %g must be in [0.05, 16]",
                        a->width_mult, a->depth_mult);
    if (effnet && (!(a->dropout <= 1) || !(a->stochastic_depth <= 1)))
        return cn_error(CN_ERR_ARG, "dropout %g and stochastic depth %g must be in [0, 1]",
                        a->dropout, a->stochastic_depth);
    return CN_OK;
}

static cn_status new_arch(cn_model **out, const cn_arch *a, int threads, int nofuse) {
    *out = NULL;
    cn_model *m = calloc(1, sizeof *m);
    if (!m) return cn_error(CN_ERR_NOMEM, "out of memory");
    m->arch = *a;
    m->threads = threads > 0 ? threads : default_threads();
    cn_graph_init(&m->g);
    m->g.nofuse = nofuse;
    cn_status st = cn_model_build(&m->g, &m->arch);
    if (st != CN_OK) {
        cn_model_free(m);
        return st;
    }
    *out = m;
    return CN_OK;
}

cn_status cn_model_new_arch(cn_model **out, const cn_arch *a, int threads) {
    return new_arch(out, a, threads, 0);
}

cn_status cn_model_new_arch_nofuse(cn_model **out, const cn_arch *a, int threads) {
    return new_arch(out, a, threads, 1);
}

cn_status cn_model_create(cn_model **out, const cn_model_config *cfg) {
    if (!out || !cfg) return cn_error(CN_ERR_ARG, "cn_model_create: NULL argument");
    *out = NULL;
    cn_arch a;
    CN_TRY(cn_arch_lookup(&a, cfg->name));
    if (cfg->in_channels) a.in_channels = cfg->in_channels;
    if (cfg->num_classes) a.num_classes = cfg->num_classes;
    CN_TRY(apply_effnet_options(&a, cfg));
    CN_TRY(cn_model_new_arch(out, &a, cfg->threads));
    cn_graph_init_params(&(*out)->g, cfg->seed, cfg->zero_init_residual);
    return CN_OK;
}

cn_status cn_model_copy_state(cn_model *dst, const cn_model *src) {
    const cn_graph *s = &src->g;
    if (src->qnet)
        return cn_error(CN_ERR_ARG, "an int8 model cannot be trained, pruned or quantized again; "
                                    "use its float original");
    cn_graph *d = &dst->g;
    if (s->nparams != d->nparams || s->nbuffers != d->nbuffers || s->ncounters != d->ncounters)
        return cn_error(CN_ERR_INTERNAL, "copy_state: different architectures");
    memcpy(d->params, s->params, sizeof(float) * s->nparams);
    cn_graph_params_changed(d);
    if (s->nbuffers) memcpy(d->buffers, s->buffers, sizeof(float) * s->nbuffers);
    if (s->ncounters) memcpy(d->counters, s->counters, sizeof(int64_t) * s->ncounters);
    free(dst->mask);
    dst->mask = NULL;
    if (src->mask) {
        if (!(dst->mask = malloc(s->nparams))) return cn_error(CN_ERR_NOMEM, "out of memory");
        memcpy(dst->mask, src->mask, s->nparams);
    }
    free(dst->quant_frac);
    dst->quant_frac = NULL;
    dst->quant_bits = 0;
    if (src->quant_frac) {
        if (!(dst->quant_frac = malloc(sizeof(int) * (size_t)s->nentries)))
            return cn_error(CN_ERR_NOMEM, "out of memory");
        memcpy(dst->quant_frac, src->quant_frac, sizeof(int) * (size_t)s->nentries);
        dst->quant_bits = src->quant_bits;
    }
    return CN_OK;
}

cn_status cn_model_mask_from_zeros(cn_model *m) {
    cn_graph *g = &m->g;
    if (!m->mask && !(m->mask = malloc(g->nparams + 1)))
        return cn_error(CN_ERR_NOMEM, "out of memory");
    memset(m->mask, 1, g->nparams);
    for (int e = 0; e < g->nentries; e++) {
        const cn_entry *en = &g->entries[e];
        if (en->kind != CN_ENTRY_CONV_WEIGHT && en->kind != CN_ENTRY_LINEAR_WEIGHT) continue;
        const float *w = g->params + en->offset;
        for (size_t i = 0; i < en->count; i++) m->mask[en->offset + i] = w[i] != 0;
    }
    return CN_OK;
}

int cn_model_is_sparse(const cn_model *m) { return m && m->mask; }

void cn_model_set_noise(cn_model *m, uint64_t seed, uint64_t step) {
    m->g.noise_seed = seed;
    m->g.noise_step = step;
}

void cn_model_free(cn_model *m) {
    if (!m) return;
    cn_graph_free(&m->g);
    free(m->mask);
    free(m->quant_frac);
    cn_qnet_free(m->qnet);
    cn_qat_free(m->qat);
    free(m->rows);
    free(m->arch_json);
    free(m);
}

const char *cn_model_name(const cn_model *m) { return m->arch.name; }
int cn_model_in_channels(const cn_model *m) { return m->arch.in_channels; }
int cn_model_num_classes(const cn_model *m) { return m->arch.num_classes; }
int cn_model_default_size(const cn_model *m) { return m->arch.default_size; }
int64_t cn_model_param_count(const cn_model *m) { return cn_graph_param_count(&m->g); }
void cn_model_set_threads(cn_model *m, int threads) {
    m->threads = threads > 0 ? threads : default_threads();
}
int cn_model_threads(const cn_model *m) { return m->threads; }

const char *cn_model_arch_json(const cn_model *m) {
    cn_model *mm = (cn_model *)m;
    cJSON *o = cJSON_CreateObject();
    if (!o) return "{}";
    cJSON_AddStringToObject(o, "name", m->arch.name);
    cJSON_AddNumberToObject(o, "in_channels", m->arch.in_channels);
    cJSON_AddNumberToObject(o, "num_classes", m->arch.num_classes);
    if (m->arch.family == CN_FAMILY_EFFICIENTNET) {
        cJSON_AddNumberToObject(o, "width_mult", m->arch.width_mult);
        cJSON_AddNumberToObject(o, "depth_mult", m->arch.depth_mult);
        cJSON_AddNumberToObject(o, "resolution", m->arch.default_size);
        cJSON_AddNumberToObject(o, "dropout", m->arch.dropout);
        cJSON_AddNumberToObject(o, "stochastic_depth", m->arch.stochastic_depth);
    }
    if (m->arch.nwidths) {
        /* a pruned model: the convolutions whose widths differ from the architecture's */
        cJSON *w = cJSON_AddObjectToObject(o, "widths");
        for (int i = 0; w && i < m->arch.nwidths; i++)
            cJSON_AddNumberToObject(w, m->arch.widths[i].conv, m->arch.widths[i].oc);
    }
    if (m->mask) cJSON_AddTrueToObject(o, "sparse");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return "{}";
    free(mm->arch_json);
    mm->arch_json = s;
    return s;
}

/* ---- files ---- */

static cn_status arch_from_json(cn_arch *a, const char *json, const char *path, int *sparse_out) {
    cJSON *o = cJSON_Parse(json);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return cn_error(CN_ERR_FORMAT, "%s: metadata 'arch' is not a JSON object", path);
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *inc = cJSON_GetObjectItemCaseSensitive(o, "in_channels");
    const cJSON *ncl = cJSON_GetObjectItemCaseSensitive(o, "num_classes");
    cn_status st = CN_OK;
    if (!cJSON_IsString(name) || !cJSON_IsNumber(inc) || !cJSON_IsNumber(ncl))
        st = cn_error(CN_ERR_FORMAT,
                      "%s: metadata 'arch' needs a string 'name' and numbers 'in_channels' and "
                      "'num_classes'",
                      path);
    else if (cn_arch_lookup(a, name->valuestring) != CN_OK)
        st = cn_error_context(CN_ERR_FORMAT, "%s", path);
    else {
        double ic = inc->valuedouble, nc = ncl->valuedouble;
        a->in_channels = ic >= 1 && ic <= 4096 && ic == (int)ic ? (int)ic : -1;
        a->num_classes = nc >= 1 && nc <= 1000000 && nc == (int)nc ? (int)nc : -1;
        if (a->in_channels < 0 || a->num_classes < 0)
            st = cn_error(CN_ERR_FORMAT, "%s: 'arch' has out-of-range in_channels or num_classes",
                          path);
    }
    if (st == CN_OK && a->family == CN_FAMILY_EFFICIENTNET) {
        /* the scaling and regularisation, when the file records them */
        cn_model_config cfg;
        cn_model_config_default(&cfg);
        const cJSON *v;
        int generic = !strcmp(a->name, "efficientnet");
        if (generic && cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "width_mult")))
            cfg.width_mult = v->valuedouble;
        if (generic && cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "depth_mult")))
            cfg.depth_mult = v->valuedouble;
        if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "resolution")))
            cfg.resolution = v->valuedouble >= 1 && v->valuedouble <= 16384 ? v->valueint : -1;
        if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "dropout")))
            cfg.dropout = v->valuedouble >= 0 && v->valuedouble <= 1 ? (float)v->valuedouble : 2;
        if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(o, "stochastic_depth")))
            cfg.stochastic_depth =
                v->valuedouble >= 0 && v->valuedouble <= 1 ? (float)v->valuedouble : 2;
        if (apply_effnet_options(a, &cfg) != CN_OK)
            st = cn_error_context(CN_ERR_FORMAT, "%s: metadata 'arch'", path);
    }
    const cJSON *widths = cJSON_GetObjectItemCaseSensitive(o, "widths");
    if (st == CN_OK && widths) {
        const cJSON *v;
        if (!cJSON_IsObject(widths))
            st = cn_error(CN_ERR_FORMAT, "%s: metadata 'arch': 'widths' is not an object", path);
        cJSON_ArrayForEach(v, widths) {
            if (st != CN_OK) break;
            double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (d != (int)d || cn_arch_set_width(a, v->string, (int)d) != CN_OK)
                st = cn_error(CN_ERR_FORMAT, "%s: metadata 'arch': bad width for '%s'", path,
                              v->string ? v->string : "");
        }
    }
    const cJSON *sparse = cJSON_GetObjectItemCaseSensitive(o, "sparse");
    if (sparse_out) *sparse_out = cJSON_IsTrue(sparse);
    cJSON_Delete(o);
    return st;
}

/* A plain torchvision state_dict: the widths that vary come from the weights' shapes. */
static cn_status arch_from_weights(cn_arch *a, const cn_st_file *f, const char *name) {
    CN_TRY(cn_arch_lookup(a, name));
    int effnet = a->family == CN_FAMILY_EFFICIENTNET;
    const char *first = effnet ? "features.0.0.weight" : "conv1.weight";
    const char *last = effnet ? "classifier.1.weight" : "fc.weight";
    const cn_st_tensor *c1 = cn_st_find(f, first), *fc = cn_st_find(f, last);
    if (!c1 || c1->ndim != 4 || !fc || fc->ndim != 2)
        return cn_error(CN_ERR_FORMAT, "%s: not a %s state_dict (no 4-d '%s' and 2-d '%s')",
                        cn_st_path(f), name, first, last);
    if (c1->shape[1] < 1 || c1->shape[1] > 4096 || fc->shape[0] < 1 || fc->shape[0] > 1000000)
        return cn_error(CN_ERR_FORMAT, "%s: %s or %s has an out-of-range shape",
                        cn_st_path(f), first, last);
    a->in_channels = (int)c1->shape[1];
    a->num_classes = (int)fc->shape[0];
    return CN_OK;
}

static int is_float(cn_dtype d) {
    return d == CN_DT_F32 || d == CN_DT_F64 || d == CN_DT_F16 || d == CN_DT_BF16;
}

static int is_weight(cn_entry_kind k) {
    return k == CN_ENTRY_CONV_WEIGHT || k == CN_ENTRY_LINEAR_WEIGHT;
}

/* The "quant" metadata of a file: {"scheme":"fixed","bits":b,"frac_bits":{"name":f,...}}, checked
 * against the model's entries; on success *frac (malloc'ed, one per entry, CN_QUANT_NONE where
 * not listed) and *bits. */
static cn_status parse_quant(const cn_model *m, const char *json, const char *path, int *bits,
                             int **frac, int *packed) {
    const cn_graph *g = &m->g;
    *frac = NULL;
    cJSON *o = cJSON_Parse(json);
    const cJSON *pk = cJSON_GetObjectItemCaseSensitive(o, "packed");
    *packed = cJSON_IsTrue(pk);
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(o, "scheme");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "bits");
    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(o, "frac_bits"), *v;
    cn_status st = CN_OK;
    if (!cJSON_IsObject(o) || !cJSON_IsString(scheme) || !cJSON_IsNumber(b) ||
        !cJSON_IsObject(fb))
        st = cn_error(CN_ERR_FORMAT,
                      "%s: metadata 'quant' needs a string 'scheme', a number 'bits' and an "
                      "object 'frac_bits'",
                      path);
    else if (strcmp(scheme->valuestring, "fixed") != 0)
        st = cn_error(CN_ERR_FORMAT, "%s: metadata 'quant': unknown scheme '%s'", path,
                      scheme->valuestring);
    else if (!(b->valuedouble >= 2 && b->valuedouble <= 16 && b->valuedouble == (int)b->valuedouble))
        st = cn_error(CN_ERR_FORMAT, "%s: metadata 'quant': bits %g is not an integer in [2, 16]",
                      path, b->valuedouble);
    else if (pk && !cJSON_IsBool(pk))
        st = cn_error(CN_ERR_FORMAT, "%s: metadata 'quant': 'packed' is not true or false", path);
    else if (!(*frac = malloc(sizeof(int) * (size_t)(g->nentries + 1))))
        st = cn_error(CN_ERR_NOMEM, "out of memory loading %s", path);
    if (st == CN_OK) {
        *bits = (int)b->valuedouble;
        for (int e = 0; e < g->nentries; e++) (*frac)[e] = CN_QUANT_NONE;
        cJSON_ArrayForEach(v, fb) {
            int e = cn_graph_find(g, v->string);
            double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
            if (e < 0 || !is_weight(g->entries[e].kind))
                st = cn_error(CN_ERR_FORMAT,
                              "%s: metadata 'quant': '%s' is not a convolution or linear weight",
                              path, v->string);
            else if (!(d >= CN_QUANT_FRAC_MIN && d <= CN_QUANT_FRAC_MAX && d == (int)d))
                st = cn_error(CN_ERR_FORMAT,
                              "%s: metadata 'quant': frac_bits of '%s' is not an integer in "
                              "[%d, %d]",
                              path, v->string, CN_QUANT_FRAC_MIN, CN_QUANT_FRAC_MAX);
            if (st != CN_OK) break;
            (*frac)[e] = (int)d;
        }
    }
    cJSON_Delete(o);
    if (st != CN_OK) {
        free(*frac);
        *frac = NULL;
    }
    return st;
}

/* Bytes of count b-bit integers packed back to back. */
static size_t packed_bytes(size_t count, int bits) { return (count * (size_t)bits + 7) / 8; }

/* The packed form (metadata "packed": true, any bits but 8 and 16): element i is the two's
 * complement b-bit integer at bits [i b, (i + 1) b) of the bytes read as one little-endian
 * number (the low bits of each byte first); the bits after the last element are 0. */
static int get_packed(const unsigned char *p, size_t i, int bits) {
    size_t bit = i * (size_t)bits;
    uint32_t v = 0;
    for (int k = 0; k < bits; k++, bit++) v |= (uint32_t)(p[bit >> 3] >> (bit & 7) & 1) << k;
    return (int)(v ^ 1u << (bits - 1)) - (1 << (bits - 1)); /* sign extension */
}

static void pack_ints(unsigned char *dst, const int *q, size_t count, int bits) {
    memset(dst, 0, packed_bytes(count, bits));
    size_t bit = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t v = (uint32_t)q[i] & ((1u << bits) - 1);
        for (int k = 0; k < bits; k++, bit++) dst[bit >> 3] |= (unsigned char)((v >> k & 1) << (bit & 7));
    }
}

/* A quantized weight: integers of `bits` bits times 2^-frac into floats (file layout). */
static cn_status dequantize_tensor(const cn_st_tensor *t, const char *path, const char *key,
                                   int bits, int frac, float *dst, size_t count, int packed) {
    if (packed) {
        if (t->dtype != CN_DT_U8 || t->ndim != 1 || (size_t)t->shape[0] != packed_bytes(count, bits))
            return cn_error(CN_ERR_FORMAT,
                            "%s: packed tensor '%s' is not %zu bytes of uint8 (%zu %d-bit "
                            "weights)",
                            path, key, packed_bytes(count, bits), count, bits);
        for (size_t i = 0; i < count; i++) dst[i] = (float)ldexp(get_packed(t->data, i, bits), -frac);
        return CN_OK;
    }
    cn_dtype want = bits <= 8 ? CN_DT_I8 : CN_DT_I16;
    if (t->dtype != want)
        return cn_error(CN_ERR_FORMAT, "%s: quantized tensor '%s' has dtype %s, %d bits need %s",
                        path, key, cn_dtype_name(t->dtype), bits, cn_dtype_name(want));
    long lo = -(1L << (bits - 1)), hi = (1L << (bits - 1)) - 1;
    const unsigned char *p = t->data;
    for (size_t i = 0; i < count; i++) {
        long q;
        if (want == CN_DT_I8) q = (int8_t)p[i];
        else q = (int16_t)(uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        if (q < lo || q > hi)
            return cn_error(CN_ERR_FORMAT,
                            "%s: quantized tensor '%s' holds %ld, outside the %d-bit range "
                            "[%ld, %ld]",
                            path, key, q, bits, lo, hi);
        dst[i] = (float)ldexp((double)q, -frac);
    }
    return CN_OK;
}

static cn_status load_plain(cn_model *m, const cn_st_file *f, const char *prefix, size_t plen,
                            const int *qfrac, int qpacked);

static cn_status load_state(cn_model *m, const cn_st_file *f, const char *prefix);

/* a failed load may have written some tensors: the weights have changed either way */
cn_status cn_model_load_state(cn_model *m, const cn_st_file *f, const char *prefix) {
    cn_status st = load_state(m, f, prefix);
    cn_graph_params_changed(&m->g);
    return st;
}

static cn_status load_state(cn_model *m, const cn_st_file *f, const char *prefix) {
    cn_graph *g = &m->g;
    const char *path = cn_st_path(f);
    size_t plen = strlen(prefix);
    const char *qjson = cn_st_meta(f, "quant");
    int qbits = 0, *qfrac = NULL, qpacked = 0;
    if (qjson) CN_TRY(parse_quant(m, qjson, path, &qbits, &qfrac, &qpacked));
    cn_status qst = CN_OK;
    for (int e = 0; e < g->nentries && qst == CN_OK; e++) {
        const cn_entry *en = &g->entries[e];
        char key[CN_NAME_MAX + 64];
        snprintf(key, sizeof key, "%s%s", prefix, en->name);
        const cn_st_tensor *t = cn_st_find(f, key);
        if (!qfrac || qfrac[e] == CN_QUANT_NONE) {
            if (t && (t->dtype == CN_DT_I8 || t->dtype == CN_DT_I16 || t->dtype == CN_DT_U8) &&
                is_weight(en->kind))
                qst = cn_error(CN_ERR_FORMAT,
                               "%s: tensor '%s' is an integer tensor without frac_bits in "
                               "metadata 'quant'",
                               path, key);
        } else if (t && is_float(t->dtype))
            qst = cn_error(CN_ERR_FORMAT,
                           "%s: tensor '%s' is listed in metadata 'quant' but has dtype %s",
                           path, key, cn_dtype_name(t->dtype));
    }
    if (qst != CN_OK) {
        free(qfrac);
        return qst;
    }
    cn_status st = CN_OK;
    for (int e = 0; e < g->nentries && st == CN_OK; e++) {
        if (!qfrac || qfrac[e] == CN_QUANT_NONE) continue;
        const cn_entry *en = &g->entries[e];
        char key[CN_NAME_MAX + 64];
        snprintf(key, sizeof key, "%s%s", prefix, en->name);
        const cn_st_tensor *t = cn_st_find(f, key);
        if (!t) continue; /* reported as missing below */
        size_t n = 1;
        for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
        if (n != en->count && !qpacked) continue; /* reported as a shape mismatch below */
        float *tmp = malloc(sizeof(float) * (en->count + 1));
        if (!tmp) st = cn_error(CN_ERR_NOMEM, "out of memory loading %s", path);
        else st = dequantize_tensor(t, path, key, qbits, qfrac[e], tmp, en->count, qpacked);
        if (st == CN_OK) cn_entry_set(g, e, tmp, cn_entry_data(g, e));
        free(tmp);
    }
    if (st == CN_OK) st = load_plain(m, f, prefix, plen, qfrac, qpacked);
    if (st != CN_OK) {
        free(qfrac);
        return st;
    }
    free(m->quant_frac);
    m->quant_frac = qfrac;
    m->quant_bits = qfrac ? qbits : 0;
    return CN_OK;
}

/* The float (and counter) tensors; entries with qfrac set were read already. */
static cn_status load_plain(cn_model *m, const cn_st_file *f, const char *prefix, size_t plen,
                            const int *qfrac, int qpacked) {
    cn_graph *g = &m->g;
    const char *path = cn_st_path(f);
    for (int e = 0; e < g->nentries; e++) {
        const cn_entry *en = &g->entries[e];
        char key[CN_NAME_MAX + 64];
        snprintf(key, sizeof key, "%s%s", prefix, en->name);
        const cn_st_tensor *t = cn_st_find(f, key);
        if (!t) return cn_error(CN_ERR_FORMAT, "%s: missing tensor '%s' of %s", path, key, m->arch.name);
        if (qpacked && qfrac && qfrac[e] != CN_QUANT_NONE) continue; /* a byte stream, read */
        int ok = t->ndim == en->ndim;
        for (int i = 0; ok && i < en->ndim; i++) ok = t->shape[i] == en->shape[i];
        if (!ok) {
            char want[96] = "", got[96] = "";
            for (int i = 0; i < en->ndim; i++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "",
                         (long long)en->shape[i]);
            for (int i = 0; i < t->ndim; i++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                         (long long)t->shape[i]);
            return cn_error(CN_ERR_SHAPE, "%s: tensor '%s' has shape [%s], %s needs [%s]", path,
                            key, got, m->arch.name, want);
        }
        if (en->kind == CN_ENTRY_NUM_BATCHES) {
            int64_t v;
            if (t->dtype == CN_DT_I64) memcpy(&v, t->data, 8);
            else if (is_float(t->dtype)) {
                float fv;
                CN_TRY(cn_st_read_f32(f, t, &fv, 1));
                v = (int64_t)fv;
            } else
                return cn_error(CN_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected I64", path,
                                key, cn_dtype_name(t->dtype));
            g->counters[en->offset] = v;
            continue;
        }
        if (qfrac && qfrac[e] != CN_QUANT_NONE) continue;
        if (!is_float(t->dtype))
            return cn_error(CN_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a float type",
                            path, key, cn_dtype_name(t->dtype));
        float *tmp = malloc(sizeof(float) * en->count);
        if (!tmp) return cn_error(CN_ERR_NOMEM, "out of memory loading %s", path);
        cn_status st = cn_st_read_f32(f, t, tmp, en->count);
        if (st == CN_OK) cn_entry_set(g, e, tmp, cn_entry_data(g, e));
        free(tmp);
        if (st != CN_OK) return st;
    }
    /* strict, as load_state_dict(strict=True): a tensor we do not know is an error, except the
     * other sections of a training checkpoint */
    for (int i = 0; i < cn_st_count(f); i++) {
        const char *name = cn_st_at(f, i)->name;
        if (plen && strncmp(name, prefix, plen) != 0) continue;
        if (!plen && strchr(name, ':')) continue;
        if (cn_graph_find(g, name + plen) < 0)
            return cn_error(CN_ERR_FORMAT, "%s: unexpected tensor '%s' for %s", path, name,
                            m->arch.name);
    }
    return CN_OK;
}

/* the ranges of a QAT model's file */
static cn_status load_qat(cn_model *m, const cn_st_file *f) {
    const char *path = cn_st_path(f);
    CN_TRY(cn_qat_enable(m));
    cn_qat *q = m->qat;
    const char *names[2] = {"qat:act_lo", "qat:act_hi"};
    float *dst[2] = {q->lo, q->hi};
    for (int k = 0; k < 2; k++) {
        const cn_st_tensor *t = cn_st_find(f, names[k]);
        if (!t || t->dtype != CN_DT_F32 || t->ndim != 1 || t->shape[0] != q->nt)
            return cn_error(CN_ERR_FORMAT, "%s: a QAT model needs tensor '%s', float32 of %d values",
                            path, names[k], q->nt);
        memcpy(dst[k], t->data, sizeof(float) * (size_t)q->nt);
    }
    for (int t = 0; t < q->nt; t++) {
        if (!q->point[t]) continue;
        int have = !isnan(q->lo[t]) || !isnan(q->hi[t]);
        if (have && !(isfinite(q->lo[t]) && isfinite(q->hi[t]) && q->lo[t] <= q->hi[t]))
            return cn_error(CN_ERR_FORMAT, "%s: QAT range %d [%g, %g] is not a finite interval",
                            path, t, (double)q->lo[t], (double)q->hi[t]);
        q->init[t] = (uint8_t)have;
    }
    return CN_OK;
}

cn_status cn_model_qat(cn_model **out, const cn_model *m) {
    if (!out || !m) return cn_error(CN_ERR_ARG, "cn_model_qat: NULL argument");
    *out = NULL;
    if (m->qnet) return cn_error(CN_ERR_ARG, "QAT starts from a float model, not an int8 one");
    if (m->quant_frac)
        return cn_error(CN_ERR_ARG, "QAT starts from a float model, not a fixed-point one");
    cn_model *q;
    CN_TRY(cn_model_new_arch_nofuse(&q, &m->arch, m->threads));
    cn_status st = cn_model_copy_state(q, m);
    if (st == CN_OK) st = cn_qat_enable(q);
    if (st == CN_OK && m->qat) {
        if (m->qat->weights_on) {
            memcpy(q->g.params, m->qat->master, sizeof(float) * q->g.nparams);
            cn_graph_params_changed(&q->g);
        }
        memcpy(q->qat->lo, m->qat->lo, sizeof(float) * (size_t)q->qat->nt);
        memcpy(q->qat->hi, m->qat->hi, sizeof(float) * (size_t)q->qat->nt);
        memcpy(q->qat->init, m->qat->init, (size_t)q->qat->nt);
    }
    if (st != CN_OK) {
        cn_model_free(q);
        return st;
    }
    *out = q;
    return CN_OK;
}

/* the metadata "quant" of an int8 file */
static int is_int8_meta(const char *json) {
    cJSON *j = cJSON_Parse(json);
    const cJSON *sc = j ? cJSON_GetObjectItemCaseSensitive(j, "scheme") : NULL;
    int r = cJSON_IsString(sc) && strcmp(sc->valuestring, "int8") == 0;
    cJSON_Delete(j);
    return r;
}

cn_status cn_model_open_file(cn_model **out, const cn_st_file *f, const cn_model_config *cfg) {
    *out = NULL;
    const char *path = cn_st_path(f);
    cn_arch a;
    const char *arch = cn_st_meta(f, "arch");
    int sparse = 0;
    if (arch) {
        CN_TRY(arch_from_json(&a, arch, path, &sparse));
        if (cfg && cfg->name && strcmp(cfg->name, a.name) != 0)
            return cn_error(CN_ERR_ARG, "%s holds a %s, not the %s named by --model", path, a.name,
                            cfg->name);
    } else if (cfg && cfg->name) {
        CN_TRY(arch_from_weights(&a, f, cfg->name));
        CN_TRY(apply_effnet_options(&a, cfg));
    } else {
        return cn_error(CN_ERR_ARG,
                        "%s has no convnet metadata: name its architecture (--model NAME) to "
                        "load it as a plain state_dict",
                        path);
    }
    cn_model *m;
    int qat = cn_st_meta(f, "qat") != NULL;
    cn_status st = qat ? cn_model_new_arch_nofuse(&m, &a, cfg ? cfg->threads : 0)
                       : cn_model_new_arch(&m, &a, cfg ? cfg->threads : 0);
    if (st != CN_OK)
        return st == CN_ERR_NOMEM ? st : cn_error_context(CN_ERR_FORMAT, "%s: metadata 'arch'", path);
    if (qat && (st = load_qat(m, f)) != CN_OK) {
        cn_model_free(m);
        return st;
    }
    const char *qmeta = cn_st_meta(f, "quant");
    if (qmeta && is_int8_meta(qmeta)) st = cn_qnet_load(&m->qnet, &m->g, f);
    else st = cn_model_load_state(m, f, "");
    if (st == CN_OK && sparse) st = cn_model_mask_from_zeros(m);
    if (st != CN_OK) {
        cn_model_free(m);
        return st;
    }
    *out = m;
    return CN_OK;
}

cn_status cn_model_load(cn_model **out, const char *path, const cn_model_config *cfg) {
    if (!out || !path) return cn_error(CN_ERR_ARG, "cn_model_load: NULL argument");
    *out = NULL;
    cn_st_file *f;
    CN_TRY(cn_st_open(&f, path));
    cn_status st = cn_model_open_file(out, f, cfg);
    cn_st_close(f);
    return st;
}

/* A quantized weight (file layout, in buf) as integers in place, when every value is q * 2^-f
 * with q in the b-bit range; 0 (buf untouched) when it is not, e.g. after fine-tuning. */
/* Whether the fixed-point file packs its weights (every width but 8 and 16 bits). */
static int packs(int bits) { return bits != 8 && bits != 16; }

static int requantize_in_place(float *buf, size_t n, int bits, int frac) {
    double lo = -(double)(1L << (bits - 1)), hi = (double)((1L << (bits - 1)) - 1);
    for (size_t i = 0; i < n; i++) {
        double q = ldexp((double)buf[i], frac);
        if (!(q >= lo && q <= hi && q == floor(q))) return 0;
    }
    /* element i of the narrower type ends before float i begins to be overwritten */
    for (size_t i = 0; i < n; i++) {
        double q = ldexp((double)buf[i], frac);
        if (packs(bits)) ((int *)buf)[i] = (int)q;
        else if (bits <= 8) ((int8_t *)buf)[i] = (int8_t)q;
        else ((int16_t *)buf)[i] = (int16_t)q;
    }
    if (packs(bits)) { /* packed_bytes(n, bits) < 4 n: through a copy, the ints are overwritten */
        int *q = malloc(sizeof(int) * (n + 1));
        if (!q) return -1;
        memcpy(q, buf, sizeof(int) * n);
        pack_ints((unsigned char *)buf, q, n, bits);
        free(q);
    }
    return 1;
}

static int is_quantized(const cn_model *m, int e) {
    return m->quant_frac && m->quant_frac[e] != CN_QUANT_NONE;
}

cn_status cn_model_add_state(const cn_model *m, cn_st_writer *w, float **scratch) {
    const cn_graph *g = &m->g;
    if (m->qat) {
        /* the float master weights, and the ranges ("qat:" is outside the state_dict) */
        cn_qat_weights_end((cn_model *)m);
        int64_t nt = m->qat->nt;
        for (int t = 0; t < m->qat->nt; t++)
            if (!m->qat->point[t] || !m->qat->init[t]) m->qat->lo[t] = m->qat->hi[t] = NAN;
        CN_TRY(cn_st_writer_add(w, "qat:act_lo", CN_DT_F32, 1, &nt, m->qat->lo));
        CN_TRY(cn_st_writer_add(w, "qat:act_hi", CN_DT_F32, 1, &nt, m->qat->hi));
        CN_TRY(cn_st_writer_meta(w, "qat", "{\"ranges\":\"moving average min/max\"}"));
    }
    if (m->qnet) {
        void *tmp = NULL;
        cn_status st = cn_qnet_add_state(m->qnet, w, &tmp);
        *scratch = tmp;
        CN_TRY(st);
        CN_TRY(cn_st_writer_meta(w, "format", FORMAT_NAME));
        CN_TRY(cn_st_writer_meta(w, "format_version", FORMAT_VERSION));
        return cn_st_writer_meta(w, "arch", cn_model_arch_json(m));
    }
    size_t total = 0;
    for (int e = 0; e < g->nentries; e++)
        if (g->entries[e].kind == CN_ENTRY_CONV_WEIGHT || is_quantized(m, e))
            total += g->entries[e].count;
    /* conv weights are written in OIHW, so they need a transposed copy that lives until save */
    float *buf = malloc(sizeof(float) * (total ? total : 1));
    if (!buf) return cn_error(CN_ERR_NOMEM, "out of memory saving the model");
    *scratch = buf;
    cJSON *quant = NULL, *frac = NULL;
    if (m->quant_frac) {
        quant = cJSON_CreateObject();
        cJSON_AddStringToObject(quant, "scheme", "fixed");
        cJSON_AddNumberToObject(quant, "bits", m->quant_bits);
        if (packs(m->quant_bits)) cJSON_AddBoolToObject(quant, "packed", 1);
        frac = cJSON_AddObjectToObject(quant, "frac_bits");
        if (!frac) {
            cJSON_Delete(quant);
            return cn_error(CN_ERR_NOMEM, "out of memory saving the model");
        }
    }
    cn_status st = CN_OK;
    for (int e = 0; e < g->nentries && st == CN_OK; e++) {
        const cn_entry *en = &g->entries[e];
        const void *data;
        cn_dtype dt = CN_DT_F32;
        if (en->kind == CN_ENTRY_NUM_BATCHES) {
            data = &g->counters[en->offset];
            dt = CN_DT_I64;
        } else if (en->kind == CN_ENTRY_CONV_WEIGHT || is_quantized(m, e)) {
            cn_entry_get(g, e, cn_entry_data(g, e), buf);
            data = buf;
            int r = is_quantized(m, e)
                        ? requantize_in_place(buf, en->count, m->quant_bits, m->quant_frac[e])
                        : 0;
            if (r < 0) st = cn_error(CN_ERR_NOMEM, "out of memory saving the model");
            if (r > 0) {
                dt = packs(m->quant_bits) ? CN_DT_U8 : m->quant_bits <= 8 ? CN_DT_I8 : CN_DT_I16;
                if (!cJSON_AddNumberToObject(frac, en->name, m->quant_frac[e]))
                    st = cn_error(CN_ERR_NOMEM, "out of memory saving the model");
            }
            buf += en->count;
            if (r > 0 && packs(m->quant_bits)) {
                const int64_t nb = (int64_t)packed_bytes(en->count, m->quant_bits);
                if (st == CN_OK) st = cn_st_writer_add(w, en->name, dt, 1, &nb, data);
                continue;
            }
        } else {
            data = cn_entry_data(g, e);
        }
        if (st == CN_OK) st = cn_st_writer_add(w, en->name, dt, en->ndim, en->shape, data);
    }
    if (st == CN_OK && quant) {
        char *qs = cJSON_PrintUnformatted(quant);
        st = qs ? cn_st_writer_meta(w, "quant", qs)
                : cn_error(CN_ERR_NOMEM, "out of memory saving the model");
        free(qs);
    }
    cJSON_Delete(quant);
    CN_TRY(st);
    CN_TRY(cn_st_writer_meta(w, "format", FORMAT_NAME));
    CN_TRY(cn_st_writer_meta(w, "format_version", FORMAT_VERSION));
    CN_TRY(cn_st_writer_meta(w, "arch", cn_model_arch_json(m)));
    return CN_OK;
}

cn_status cn_model_save(const cn_model *m, const char *path) {
    cn_st_writer *w;
    CN_TRY(cn_st_writer_new(&w));
    float *scratch = NULL;
    cn_status st = cn_model_add_state(m, w, &scratch);
    if (st == CN_OK) st = cn_st_writer_save(w, path);
    cn_st_writer_free(w);
    free(scratch);
    return st;
}

/* ---- running ---- */

cn_status cn_model_forward_nhwc(cn_model *m, const float *x, int n, int h, int w, int train,
                                float *logits) {
    if (!m || !x || n <= 0) return cn_error(CN_ERR_ARG, "cn_model_forward: bad arguments");
    if (m->qnet) {
        if (train)
            return cn_error(CN_ERR_ARG, "an int8 model runs inference only; train its float "
                                        "original");
        CN_TRY(cn_qnet_forward(m->qnet, x, n, h, w, m->threads, logits));
        m->last_n = n;
        m->last_train = 0;
        m->have_dlogits = 0;
        return CN_OK;
    }
    if (m->qat) cn_qat_weights_begin(m);
    int batch = n;
    /* keep a larger plan instead of re-planning for a smaller last batch */
    if (m->g.planned && m->g.in_h == h && m->g.in_w == w && m->g.batch >= n &&
        m->g.train_plan >= train && m->g.threads == m->threads)
        batch = m->g.batch;
    cn_status pst = cn_graph_plan(&m->g, batch, h, w, train, m->threads);
    if (pst != CN_OK) {
        if (m->qat) cn_qat_weights_end(m);
        return pst;
    }
    cn_graph_forward(&m->g, x, n, train);
    if (m->qat && !train) cn_qat_weights_end(m);
    if (train) m->g.noise_step++; /* the next step draws new masks unless set */
    m->last_n = n;
    m->last_train = train;
    m->have_dlogits = 0;
    if (logits) {
        const cn_tensor *o = cn_graph_output(&m->g);
        memcpy(logits, o->data, sizeof(float) * n * o->c);
    }
    return CN_OK;
}

cn_status cn_model_forward(cn_model *m, const float *x, int n, int h, int w, int train,
                           float *logits) {
    if (!m || !x || n <= 0 || h <= 0 || w <= 0)
        return cn_error(CN_ERR_ARG, "cn_model_forward: bad arguments");
    int c = m->arch.in_channels;
    size_t per = (size_t)h * w * c;
    if (c == 1) return cn_model_forward_nhwc(m, x, n, h, w, train, logits);
    float *t = malloc(sizeof(float) * per * n);
    if (!t) return cn_error(CN_ERR_NOMEM, "out of memory for a %dx%dx%dx%d input", n, c, h, w);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (size_t p = 0; p < (size_t)h * w; p++)
                t[i * per + p * c + ch] = x[i * per + ch * (size_t)h * w + p];
    cn_status st = cn_model_forward_nhwc(m, t, n, h, w, train, logits);
    free(t);
    return st;
}

cn_status cn_model_loss(cn_model *m, const int32_t *labels, float smoothing, float *loss,
                        int *correct) {
    if (!m->last_n) return cn_error(CN_ERR_ARG, "cn_model_loss: no forward pass yet");
    if (smoothing < 0 || smoothing >= 1)
        return cn_error(CN_ERR_ARG, "label smoothing %g is outside [0, 1)", smoothing);
    const cn_tensor *o = cn_graph_output(&m->g);
    for (int i = 0; i < m->last_n; i++)
        if (labels[i] < 0 || labels[i] >= o->c)
            return cn_error(CN_ERR_ARG, "label %d of sample %d is outside [0, %d)", labels[i], i,
                            o->c);
    float *d = m->last_train ? o->grad : NULL;
    const float *lg = m->qnet ? m->qnet->logits : o->data;
    float l = cn_softmax_xent(d, correct, lg, labels, m->last_n, o->c, smoothing);
    if (loss) *loss = l;
    m->have_dlogits = d != NULL;
    return CN_OK;
}

cn_status cn_model_backward(cn_model *m) {
    if (!m->last_train || !m->have_dlogits)
        return cn_error(CN_ERR_ARG, "cn_model_backward needs a train forward and cn_model_loss");
    cn_graph_backward(&m->g, m->last_n);
    if (m->qat) cn_qat_weights_end(m);
    return CN_OK;
}

void cn_model_zero_grad(cn_model *m) { memset(m->g.grads, 0, sizeof(float) * m->g.nparams); }

/* ---- the state table ---- */

int cn_model_tensor_count(const cn_model *m) { return m->g.nentries; }

cn_status cn_model_tensor_info(const cn_model *m, int i, cn_tensor_info *info) {
    if (i < 0 || i >= m->g.nentries) return cn_error(CN_ERR_ARG, "tensor index %d out of range", i);
    const cn_entry *en = &m->g.entries[i];
    info->name = en->name;
    info->ndim = en->ndim;
    for (int k = 0; k < 4; k++) info->shape[k] = k < en->ndim ? en->shape[k] : 0;
    info->count = (int64_t)en->count;
    info->is_param = cn_entry_is_param(en->kind);
    info->is_int64 = en->kind == CN_ENTRY_NUM_BATCHES;
    return CN_OK;
}

int cn_model_tensor_find(const cn_model *m, const char *name) { return cn_graph_find(&m->g, name); }

cn_status cn_model_tensor_get(const cn_model *m, int i, float *dst) {
    if (i < 0 || i >= m->g.nentries) return cn_error(CN_ERR_ARG, "tensor index %d out of range", i);
    const cn_entry *en = &m->g.entries[i];
    if (en->kind == CN_ENTRY_NUM_BATCHES) dst[0] = (float)m->g.counters[en->offset];
    else cn_entry_get(&m->g, i, cn_entry_data(&m->g, i), dst);
    return CN_OK;
}

cn_status cn_model_tensor_set(cn_model *m, int i, const float *src) {
    if (i < 0 || i >= m->g.nentries) return cn_error(CN_ERR_ARG, "tensor index %d out of range", i);
    const cn_entry *en = &m->g.entries[i];
    if (en->kind == CN_ENTRY_NUM_BATCHES) m->g.counters[en->offset] = (int64_t)src[0];
    else cn_entry_set(&m->g, i, src, cn_entry_data(&m->g, i));
    cn_graph_params_changed(&m->g);
    return CN_OK;
}

cn_status cn_model_grad_get(const cn_model *m, int i, float *dst) {
    if (i < 0 || i >= m->g.nentries || !cn_entry_is_param(m->g.entries[i].kind))
        return cn_error(CN_ERR_ARG, "tensor %d has no gradient", i);
    cn_entry_get(&m->g, i, cn_entry_grad(&m->g, i), dst);
    return CN_OK;
}

cn_status cn_model_layers(cn_model *m, int h, int w, const cn_layer_info **rows, int *count) {
    CN_TRY(cn_graph_plan(&m->g, 1, h, w, 0, m->threads));
    free(m->rows);
    m->rows = calloc((size_t)m->g.nnodes, sizeof *m->rows);
    if (!m->rows) return cn_error(CN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < m->g.nnodes; i++) {
        const cn_node *nd = &m->g.nodes[i];
        const cn_tensor *t = &m->g.tensors[nd->out];
        cn_layer_info *r = &m->rows[i];
        r->name = nd->name;
        r->op = cn_op_name(nd->op);
        r->c = t->c;
        r->h = t->h;
        r->w = t->w;
        r->params = cn_node_params(&m->g, nd);
        r->macs = cn_node_macs(&m->g, nd);
        if (m->g.node_time) {
            r->forward_s = m->g.node_time[2 * i];
            r->backward_s = m->g.node_time[2 * i + 1];
        }
    }
    *rows = m->rows;
    *count = m->g.nnodes;
    return CN_OK;
}

int cn_model_stages(cn_model *m, int h, int w, cn_stage_info *rows, int max_rows) {
    if (m->arch.family != CN_FAMILY_EFFICIENTNET) return 0;
    const cn_layer_info *layers;
    int n;
    if (cn_model_layers(m, h, w, &layers, &n) != CN_OK) return 0;
    cn_effnet_stage st[7];
    cn_effnet_stages(&m->arch, st);
    int k = 0;
    for (int s = 0; s < 7 && k < max_rows; s++, k++) {
        cn_stage_info *r = &rows[k];
        memset(r, 0, sizeof *r);
        r->expand = st[s].expand;
        r->kernel = st[s].kernel;
        r->stride = st[s].stride;
        r->in_channels = st[s].in_c;
        r->out_channels = st[s].out_c;
        r->repeats = st[s].repeats;
        char prefix[32];
        int plen = snprintf(prefix, sizeof prefix, "features.%d.", s + 1), first = 1;
        for (int i = 0; i < n; i++) {
            if (strncmp(layers[i].name, prefix, (size_t)plen) != 0) continue;
            if (first) {
                /* the input of the stage is the output of the node before its first one */
                const cn_tensor *t = &m->g.tensors[m->g.nodes[i].in[0]];
                r->in_h = t->h;
                r->in_w = t->w;
                first = 0;
            }
            r->out_h = layers[i].h;
            r->out_w = layers[i].w;
            r->params += layers[i].params;
            r->macs += layers[i].macs;
        }
    }
    return k;
}

double cn_model_width_mult(const cn_model *m) {
    return m->arch.family == CN_FAMILY_EFFICIENTNET ? m->arch.width_mult : 1.0;
}
double cn_model_depth_mult(const cn_model *m) {
    return m->arch.family == CN_FAMILY_EFFICIENTNET ? m->arch.depth_mult : 1.0;
}

void cn_model_set_profiling(cn_model *m, int on) {
    m->g.profile = on;
    memset(m->g.op_time, 0, sizeof m->g.op_time);
    free(m->g.node_time);
    /* per-layer times are optional: without memory, only the per-op totals are kept */
    m->g.node_time = on ? calloc(2 * (size_t)m->g.nnodes + 1, sizeof(double)) : NULL;
    if (m->qnet) {
        free(m->qnet->step_time);
        m->qnet->step_time = on ? calloc((size_t)m->qnet->nsteps + 1, sizeof(double)) : NULL;
    }
}

int cn_model_profile(const cn_model *m, cn_op_time *rows, int max_rows) {
    int k = 0;
    if (m->qnet && m->qnet->step_time) {
        /* int8: per step kind */
        for (int op = 0; op < CN_Q_NOPS && k < max_rows; op++) {
            double t = 0;
            int any = 0;
            for (int i = 0; i < m->qnet->nsteps; i++)
                if ((int)m->qnet->steps[i].op == op) t += m->qnet->step_time[i], any = 1;
            if (!any) continue;
            rows[k].op = cn_qop_name((cn_qop)op);
            rows[k].forward_s = t;
            rows[k].backward_s = 0;
            k++;
        }
        return k;
    }
    for (int op = 0; op <= CN_OP_COUNT && k < max_rows; op++) {
        if (m->g.op_time[0][op] == 0 && m->g.op_time[1][op] == 0) continue;
        rows[k].op = cn_profile_slot_name(op);
        rows[k].forward_s = m->g.op_time[0][op];
        rows[k].backward_s = m->g.op_time[1][op];
        k++;
    }
    return k;
}
