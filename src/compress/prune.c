/* Pruning: channel groups found on the graph, importance, selection, surgery that rebuilds a
 * smaller dense model, and unstructured magnitude masks.
 *
 * A channel group is every (state tensor, dimension) whose size is the output width of one
 * convolution, the group's producer. It is found by following the producer's output forward
 * through ops that keep channels one to one (batch norm, activations, dropout, drop path,
 * pooling, depthwise convolution) until every path ends in a consumer that only reads the
 * channels (a convolution's or linear layer's input dimension). Squeeze-and-excitation ties in
 * the convolution that computes the scale (fc2). The rule for residual connections: a group whose
 * channels reach a residual add (or an option-A shortcut, or the network's output) is tied to
 * every other branch of that add and is left alone; so in a ResNet the channels inside each
 * residual branch are pruned (conv1 of a basic block, conv1 and conv2 of a bottleneck) and the
 * residual stream keeps its width, and in an EfficientNet the expanded channels of each MBConv
 * (expand conv, depthwise conv, their BNs, SE reduce input and SE expand output, project input),
 * the SE squeeze widths, the stem, the head and the outputs of blocks without a skip are pruned.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "graph/model.h"

typedef struct member {
    int entry, dim;
} member;

typedef struct group {
    int producer;   /* conv node */
    int channels;
    int bn;         /* the producer's batch norm node, or -1 */
    int nm, cap;
    member *m;
} group;

typedef struct groups {
    group *g;
    int n;
    int total;      /* channels of all groups */
} groups;

static void groups_free(groups *gs) {
    for (int i = 0; i < gs->n; i++) free(gs->g[i].m);
    free(gs->g);
    memset(gs, 0, sizeof *gs);
}

static int add_member(group *gr, int entry, int dim) {
    if (entry < 0) return 1;
    for (int i = 0; i < gr->nm; i++)
        if (gr->m[i].entry == entry && gr->m[i].dim == dim) return 1;
    if (gr->nm == gr->cap) {
        int cap = gr->cap ? 2 * gr->cap : 16;
        member *m = realloc(gr->m, sizeof *m * (size_t)cap);
        if (!m) return 0;
        gr->m = m;
        gr->cap = cap;
    }
    gr->m[gr->nm++] = (member){entry, dim};
    return 1;
}

static int is_depthwise(const cn_graph *g, const cn_node *nd) {
    return nd->op == CN_OP_CONV && nd->a.conv.groups > 1 &&
           nd->a.conv.groups == g->tensors[nd->in[0]].c && nd->a.conv.oc == nd->a.conv.groups;
}

static int producer_of(const cn_graph *g, int t) {
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].out == t) return i;
    return -1;
}

/* Follows the scale input of an SE multiply back through activations to the convolution that
 * computes it; -1 if it is anything else. */
static int scale_source(const cn_graph *g, int t) {
    for (;;) {
        int p = producer_of(g, t);
        if (p < 0) return -1;
        const cn_node *nd = &g->nodes[p];
        if (nd->op == CN_OP_CONV && nd->a.conv.groups == 1) return p;
        if (nd->op != CN_OP_SIGMOID && nd->op != CN_OP_SILU && nd->op != CN_OP_RELU) return -1;
        t = nd->in[0];
    }
}

/* 1: the group of conv node p is prunable (members filled), 0: tied, -1: out of memory */
static int trace(const cn_graph *g, int p, group *gr) {
    const cn_node *pn = &g->nodes[p];
    gr->producer = p;
    gr->channels = pn->a.conv.oc;
    gr->bn = -1;
    if (!add_member(gr, pn->p[0], 0) || !add_member(gr, pn->p[1], 0)) return -1;
    int *queue = malloc(sizeof *queue * (size_t)(g->ntensors + 1));
    char *seen = calloc((size_t)g->ntensors, 1);
    if (!queue || !seen) {
        free(queue);
        free(seen);
        return -1;
    }
    int head = 0, tail = 0, ok = 1;
    queue[tail++] = pn->out;
    seen[pn->out] = 1;
#define PUSH(t)                                                                                    \
    do {                                                                                           \
        if (!seen[t]) {                                                                            \
            seen[t] = 1;                                                                           \
            queue[tail++] = (t);                                                                   \
        }                                                                                          \
    } while (0)
    while (ok == 1 && head < tail) {
        int t = queue[head++];
        if (t == g->ntensors - 1) ok = 0; /* the logits */
        for (int i = 0; ok == 1 && i < g->nnodes; i++) {
            const cn_node *nd = &g->nodes[i];
            int via0 = nd->in[0] == t, via1 = nd->in[1] == t;
            if (!via0 && !via1) continue;
            switch (nd->op) {
            case CN_OP_BN:
                if (gr->bn < 0 && t == pn->out) gr->bn = i;
                for (int k = 0; k < 2; k++)
                    if (!add_member(gr, nd->p[k], 0) || !add_member(gr, nd->buf[k], 0)) ok = -1;
                PUSH(nd->out);
                break;
            case CN_OP_RELU:
            case CN_OP_SILU:
            case CN_OP_SIGMOID:
            case CN_OP_DROPOUT:
            case CN_OP_DROPPATH:
            case CN_OP_MAXPOOL:
            case CN_OP_AVGPOOL:
            case CN_OP_GAP: PUSH(nd->out); break;
            case CN_OP_FLATTEN: {
                /* channels map to features one to one only after a global pool */
                int src = producer_of(g, t);
                if (src < 0 || g->nodes[src].op != CN_OP_GAP) ok = 0;
                else PUSH(nd->out);
                break;
            }
            case CN_OP_LINEAR:
                if (!add_member(gr, nd->p[0], 1)) ok = -1;
                break;
            case CN_OP_CONV:
                if (is_depthwise(g, nd)) {
                    if (!add_member(gr, nd->p[0], 0) || !add_member(gr, nd->p[1], 0)) ok = -1;
                    PUSH(nd->out);
                } else if (nd->a.conv.groups == 1) {
                    if (!add_member(gr, nd->p[0], 1)) ok = -1;
                } else {
                    ok = 0;
                }
                break;
            case CN_OP_SCALE: {
                if (via1) {
                    ok = 0; /* reached the scale side: tied to the scaled tensor */
                    break;
                }
                int q = scale_source(g, nd->in[1]);
                if (q < 0) {
                    ok = 0;
                    break;
                }
                if (!add_member(gr, g->nodes[q].p[0], 0) || !add_member(gr, g->nodes[q].p[1], 0))
                    ok = -1;
                PUSH(nd->out);
                break;
            }
            default: ok = 0; break; /* add, shortcut, input: tied */
            }
        }
    }
#undef PUSH
    free(queue);
    free(seen);
    return ok;
}

static cn_status find_groups(const cn_graph *g, groups *gs) {
    memset(gs, 0, sizeof *gs);
    gs->g = calloc((size_t)g->nnodes + 1, sizeof *gs->g);
    if (!gs->g) return cn_error(CN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        if (nd->op != CN_OP_CONV || nd->a.conv.groups != 1) continue;
        group *gr = &gs->g[gs->n];
        int r = trace(g, i, gr);
        if (r < 0) {
            groups_free(gs);
            return cn_error(CN_ERR_NOMEM, "out of memory");
        }
        if (r == 0) {
            free(gr->m);
            memset(gr, 0, sizeof *gr);
            continue;
        }
        gs->total += gr->channels;
        gs->n++;
    }
    return CN_OK;
}

/* ---------------------------------------------------------------- public: groups */

cn_status cn_prune_groups(const cn_model *m, cn_prune_group **out, int *count) {
    if (!m || !out || !count) return cn_error(CN_ERR_ARG, "cn_prune_groups: NULL argument");
    *out = NULL;
    *count = 0;
    groups gs;
    CN_TRY(find_groups(&m->g, &gs));
    cn_prune_group *r = calloc((size_t)gs.n + 1, sizeof *r);
    if (!r) {
        groups_free(&gs);
        return cn_error(CN_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < gs.n; i++) {
        const cn_node *nd = &m->g.nodes[gs.g[i].producer];
        snprintf(r[i].name, sizeof r[i].name, "%s", nd->name);
        r[i].channels = gs.g[i].channels;
        r[i].tensors = gs.g[i].nm;
    }
    *out = r;
    *count = gs.n;
    groups_free(&gs);
    return CN_OK;
}

/* ---------------------------------------------------------------- importance */

/* Per channel: |gamma| (bn), or the producer filter's squared L2 / L1 norm, as a share of the
 * group's total when normalise is set (raw otherwise, for the global scope). Returns the total. */
static double importance(const cn_graph *g, const group *gr, cn_prune_method method, int normalise,
                         float *s) {
    int oc = gr->channels;
    if (method == CN_PRUNE_BN && gr->bn >= 0) {
        const float *gamma = cn_entry_data(g, g->nodes[gr->bn].p[0]);
        for (int c = 0; c < oc; c++) s[c] = fabsf(gamma[c]);
        return 0;
    }
    /* the producer's filters; internal layout OHWI keeps each filter contiguous */
    const cn_entry *en = &g->entries[g->nodes[gr->producer].p[0]];
    const float *w = cn_entry_data(g, g->nodes[gr->producer].p[0]);
    size_t per = en->count / (size_t)oc;
    double total = 0;
    for (int c = 0; c < oc; c++) {
        double a = 0;
        for (size_t i = 0; i < per; i++) {
            double v = w[(size_t)c * per + i];
            a += method == CN_PRUNE_L1 ? fabs(v) : v * v;
        }
        s[c] = (float)a;
        total += a;
    }
    if (normalise)
        for (int c = 0; c < oc; c++) s[c] = total > 0 ? (float)(s[c] / total) : 0.0f;
    return total;
}

cn_status cn_prune_importance(const cn_model *m, cn_prune_method method, int group_index,
                              float *scores) {
    if (!m || !scores) return cn_error(CN_ERR_ARG, "cn_prune_importance: NULL argument");
    if (method == CN_PRUNE_MAGNITUDE)
        return cn_error(CN_ERR_ARG, "importance: magnitude pruning has no channel importance");
    groups gs;
    CN_TRY(find_groups(&m->g, &gs));
    cn_status st = CN_OK;
    if (group_index < 0 || group_index >= gs.n)
        st = cn_error(CN_ERR_ARG, "importance: group %d of %d", group_index, gs.n);
    else
        importance(&m->g, &gs.g[group_index], method, 1, scores);
    groups_free(&gs);
    return st;
}

void cn_prune_config_default(cn_prune_config *c) {
    memset(c, 0, sizeof *c);
    c->method = CN_PRUNE_L2;
    c->amount = -1;
    c->threshold = -1;
    c->min_channels = 1;
    c->round_to = 1;
}

static cn_status check_config(const cn_prune_config *c) {
    if ((int)c->method < 0 || c->method > CN_PRUNE_MAGNITUDE)
        return cn_error(CN_ERR_ARG, "unknown method %d", (int)c->method);
    int has_amount = c->amount >= 0, has_threshold = c->threshold >= 0;
    if (has_amount == has_threshold)
        return cn_error(CN_ERR_ARG, "give exactly one of --amount and --threshold");
    if (has_amount && !(c->amount < 1))
        return cn_error(CN_ERR_ARG, "--amount %g is outside [0, 1)", c->amount);
    if (has_threshold && !isfinite(c->threshold))
        return cn_error(CN_ERR_ARG, "--threshold must be a finite number >= 0");
    if (c->method == CN_PRUNE_MAGNITUDE && has_threshold && c->threshold < 0)
        return cn_error(CN_ERR_ARG, "--threshold must be >= 0");
    if (c->min_channels < 1 || c->min_channels > 65536)
        return cn_error(CN_ERR_ARG, "--min-channels %d is outside [1, 65536]",
                        c->min_channels);
    if (c->round_to < 1 || c->round_to > 4096)
        return cn_error(CN_ERR_ARG, "--round-to %d is outside [1, 4096]", c->round_to);
    return CN_OK;
}

/* ---------------------------------------------------------------- structured selection */

typedef struct scored {
    float s;
    int g, c;
} scored;

static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    if (x->g != y->g) return x->g - y->g;
    return x->c - y->c;
}

/* Kept channels after the floor (min_channels) and rounding (round_to) rules, never more than the
 * group has. */
static int kept_count(int want, int channels, const cn_prune_config *c) {
    int k = want < c->min_channels ? c->min_channels : want;
    k = (k + c->round_to - 1) / c->round_to * c->round_to;
    return k > channels ? channels : k;
}

/* keep (gs->total bytes, group after group) from cfg; m untouched. */
static cn_status select_channels(const cn_graph *g, const groups *gs, const cn_prune_config *cfg,
                                 uint8_t *keep) {
    scored *all = malloc(sizeof *all * ((size_t)gs->total + 1));
    float *s = malloc(sizeof *s * ((size_t)gs->total + 1));
    if (!all || !s) {
        free(all);
        free(s);
        return cn_error(CN_ERR_NOMEM, "out of memory");
    }
    cn_status st = CN_OK;
    /* global scope: l1/l2 importance against every prunable channel of the model */
    int global_norm = cfg->global && cfg->method != CN_PRUNE_BN, off = 0;
    double total = 0;
    for (int i = 0; i < gs->n; i++) {
        total += importance(g, &gs->g[i], cfg->method, !global_norm, s + off);
        off += gs->g[i].channels;
    }
    if (global_norm)
        for (int i = 0; i < gs->total; i++) s[i] = total > 0 ? (float)(s[i] / total) : 0.0f;
    off = 0;
    for (int i = 0; st == CN_OK && i < gs->n; i++) {
        const group *gr = &gs->g[i];
        int oc = gr->channels;
        for (int c = 0; c < oc; c++) {
            all[off + c] = (scored){s[off + c], i, c};
            keep[off + c] = 1;
        }
        if (cfg->threshold >= 0) {
            int below = 0;
            for (int c = 0; c < oc; c++) below += s[off + c] < cfg->threshold;
            if (below == oc) {
                float mx = 0;
                for (int c = 0; c < oc; c++) mx = s[off + c] > mx ? s[off + c] : mx;
                st = cn_error(CN_ERR_ARG,
                              "--threshold %g would remove every channel of %s (its "
                              "largest importance is %g)",
                              cfg->threshold, g->nodes[gr->producer].name, mx);
            }
        }
        off += oc;
    }
    if (st == CN_OK && !cfg->global) {
        off = 0;
        for (int i = 0; i < gs->n; i++) {
            int oc = gs->g[i].channels, drop;
            qsort(all + off, (size_t)oc, sizeof *all, cmp_scored);
            if (cfg->threshold >= 0) {
                drop = 0;
                while (drop < oc && all[off + drop].s < cfg->threshold) drop++;
            } else {
                drop = (int)floor((double)cfg->amount * oc);
            }
            int k = kept_count(oc - drop, oc, cfg);
            for (int j = 0; j < oc - k; j++) keep[off + all[off + j].c] = 0;
            off += oc;
        }
    } else if (st == CN_OK) {
        qsort(all, (size_t)gs->total, sizeof *all, cmp_scored);
        int drop;
        if (cfg->threshold >= 0) {
            drop = 0;
            while (drop < gs->total && all[drop].s < cfg->threshold) drop++;
        } else {
            drop = (int)floor((double)cfg->amount * gs->total);
        }
        /* drop the least important first, within each group's floor */
        int *left = malloc(sizeof *left * ((size_t)gs->n + 1)), *offs = malloc(sizeof *offs * ((size_t)gs->n + 1));
        if (!left || !offs) {
            st = cn_error(CN_ERR_NOMEM, "out of memory");
        } else {
            off = 0;
            for (int i = 0; i < gs->n; i++) {
                left[i] = gs->g[i].channels;
                offs[i] = off;
                off += gs->g[i].channels;
            }
            for (int j = 0; j < drop; j++) {
                const scored *a = &all[j];
                if (left[a->g] - 1 < cfg->min_channels) continue;
                keep[offs[a->g] + a->c] = 0;
                left[a->g]--;
            }
            /* rounding: restore the most important dropped channels up to a multiple */
            for (int i = 0; i < gs->n; i++) {
                int want = kept_count(left[i], gs->g[i].channels, cfg);
                for (int j = drop - 1; want > left[i] && j >= 0; j--)
                    if (all[j].g == i && !keep[offs[i] + all[j].c]) {
                        keep[offs[i] + all[j].c] = 1;
                        left[i]++;
                    }
            }
        }
        free(left);
        free(offs);
    }
    free(all);
    free(s);
    return st;
}

/* ---------------------------------------------------------------- surgery */

static cn_status model_clone_arch(cn_model **out, const cn_model *m, const cn_arch *a);

/* Copies entry e of src into dst, keeping along dims 0 and 1 the indices idx0 / idx1 (NULL: all). */
static cn_status copy_sliced(const cn_graph *src, cn_graph *dst, int e, const int *idx0, int n0,
                             const int *idx1, int n1) {
    const cn_entry *se = &src->entries[e], *de = &dst->entries[e];
    if (se->kind == CN_ENTRY_NUM_BATCHES) {
        dst->counters[de->offset] = src->counters[se->offset];
        return CN_OK;
    }
    int64_t d0 = se->shape[0], d1 = se->ndim > 1 ? se->shape[1] : 1, rest = 1;
    for (int k = 2; k < se->ndim; k++) rest *= se->shape[k];
    int64_t o0 = idx0 ? n0 : d0, o1 = idx1 ? n1 : d1;
    if ((size_t)(o0 * o1 * rest) != de->count)
        return cn_error(CN_ERR_INTERNAL, "%s: %zu values after surgery, expected %zu",
                        se->name, (size_t)(o0 * o1 * rest), de->count);
    float *a = malloc(sizeof *a * se->count), *b = malloc(sizeof *b * de->count + 1);
    if (!a || !b) {
        free(a);
        free(b);
        return cn_error(CN_ERR_NOMEM, "out of memory");
    }
    cn_entry_get(src, e, cn_entry_data(src, e), a);
    for (int64_t i = 0; i < o0; i++) {
        int64_t si = idx0 ? idx0[i] : i;
        for (int64_t j = 0; j < o1; j++) {
            int64_t sj = idx1 ? idx1[j] : j;
            memcpy(b + (i * o1 + j) * rest, a + (si * d1 + sj) * rest, sizeof *a * (size_t)rest);
        }
    }
    cn_entry_set(dst, e, b, cn_entry_data(dst, e));
    free(a);
    free(b);
    return CN_OK;
}

static cn_status surgery(cn_model **out, const cn_model *m, const groups *gs, const uint8_t *keep) {
    *out = NULL;
    const cn_graph *g = &m->g;
    cn_arch a = m->arch;
    int off = 0;
    for (int i = 0; i < gs->n; i++) {
        const group *gr = &gs->g[i];
        int k = 0;
        for (int c = 0; c < gr->channels; c++) k += keep[off + c] != 0;
        if (k == 0)
            return cn_error(CN_ERR_ARG, "every channel of %s would be removed",
                            g->nodes[gr->producer].name);
        CN_TRY(cn_arch_set_width(&a, g->nodes[gr->producer].name, k));
        off += gr->channels;
    }
    cn_model *p;
    CN_TRY(model_clone_arch(&p, m, &a));
    cn_status st = CN_OK;
    if (p->g.nentries != g->nentries) st = cn_error(CN_ERR_INTERNAL, "state tables differ");
    /* per entry, the group whose channels its dims 0 and 1 are */
    int *gd = malloc(sizeof *gd * 2 * ((size_t)g->nentries + 1));
    int **idx = calloc((size_t)gs->n + 1, sizeof *idx);
    int *nidx = calloc((size_t)gs->n + 1, sizeof *nidx);
    if (st == CN_OK && (!gd || !idx || !nidx)) st = cn_error(CN_ERR_NOMEM, "out of memory");
    if (st == CN_OK) {
        for (int e = 0; e < 2 * g->nentries; e++) gd[e] = -1;
        off = 0;
        for (int i = 0; st == CN_OK && i < gs->n; i++) {
            const group *gr = &gs->g[i];
            idx[i] = malloc(sizeof **idx * (size_t)gr->channels);
            if (!idx[i]) {
                st = cn_error(CN_ERR_NOMEM, "out of memory");
                break;
            }
            for (int c = 0; c < gr->channels; c++)
                if (keep[off + c]) idx[i][nidx[i]++] = c;
            for (int j = 0; j < gr->nm; j++) {
                int *slot = &gd[2 * gr->m[j].entry + gr->m[j].dim];
                if (*slot >= 0 && *slot != i)
                    st = cn_error(CN_ERR_INTERNAL, "%s belongs to two channel groups",
                                  g->entries[gr->m[j].entry].name);
                *slot = i;
            }
            off += gr->channels;
        }
    }
    for (int e = 0; st == CN_OK && e < g->nentries; e++) {
        if (strcmp(g->entries[e].name, p->g.entries[e].name) != 0) {
            st = cn_error(CN_ERR_INTERNAL, "state tables differ at %s", g->entries[e].name);
            break;
        }
        int g0 = gd[2 * e], g1 = gd[2 * e + 1];
        st = copy_sliced(g, &p->g, e, g0 >= 0 ? idx[g0] : NULL, g0 >= 0 ? nidx[g0] : 0,
                         g1 >= 0 ? idx[g1] : NULL, g1 >= 0 ? nidx[g1] : 0);
    }
    cn_graph_params_changed(&p->g);
    if (st == CN_OK && m->mask) st = cn_model_mask_from_zeros(p);
    for (int i = 0; idx && i < gs->n; i++) free(idx[i]);
    free(idx);
    free(nidx);
    free(gd);
    if (st != CN_OK) {
        cn_model_free(p);
        return st;
    }
    *out = p;
    return CN_OK;
}

static cn_status model_clone_arch(cn_model **out, const cn_model *m, const cn_arch *a) {
    return cn_model_new_arch(out, a, m->threads);
}

static cn_status not_int8(const cn_model *m) {
    return m->qnet ? cn_error(CN_ERR_ARG, "an int8 model cannot be pruned; prune its float "
                                          "original, then quantize")
                   : CN_OK;
}

cn_status cn_prune_surgery(cn_model **out, const cn_model *m, const uint8_t *keep) {
    if (!out || !m || !keep) return cn_error(CN_ERR_ARG, "cn_prune_surgery: NULL argument");
    *out = NULL;
    CN_TRY(not_int8(m));
    groups gs;
    CN_TRY(find_groups(&m->g, &gs));
    cn_status st = surgery(out, m, &gs, keep);
    groups_free(&gs);
    return st;
}

/* ---------------------------------------------------------------- unstructured */

static int is_masked_kind(cn_entry_kind k) {
    return k == CN_ENTRY_CONV_WEIGHT || k == CN_ENTRY_LINEAR_WEIGHT;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Masks (and zeroes) the smallest-magnitude weights of m in place. */
static cn_status magnitude_mask(cn_model *m, const cn_prune_config *cfg) {
    cn_graph *g = &m->g;
    CN_TRY(cn_model_mask_from_zeros(m)); /* allocates the mask; already-zero weights stay pruned */
    size_t total = 0, biggest = 0;
    for (int e = 0; e < g->nentries; e++)
        if (is_masked_kind(g->entries[e].kind)) {
            total += g->entries[e].count;
            if (g->entries[e].count > biggest) biggest = g->entries[e].count;
        }
    float *v = malloc(sizeof *v * ((cfg->global ? total : biggest) + 1));
    if (!v) return cn_error(CN_ERR_NOMEM, "out of memory");
    for (int pass = 0; pass < (cfg->global ? 1 : g->nentries); pass++) {
        size_t n = 0;
        for (int e = cfg->global ? 0 : pass; e < (cfg->global ? g->nentries : pass + 1); e++) {
            if (!is_masked_kind(g->entries[e].kind)) continue;
            const float *w = cn_entry_data(g, e);
            for (size_t i = 0; i < g->entries[e].count; i++) v[n++] = fabsf(w[i]);
        }
        if (!n) continue;
        size_t k;
        float t;
        if (cfg->threshold >= 0) {
            t = cfg->threshold;
            k = SIZE_MAX; /* everything below t */
        } else {
            k = (size_t)floor((double)cfg->amount * (double)n);
            if (!k) continue;
            qsort(v, n, sizeof *v, cmp_float);
            t = v[k - 1];
        }
        /* prune |w| < t, then |w| == t in order until k are pruned */
        size_t below = 0;
        for (int e = cfg->global ? 0 : pass; e < (cfg->global ? g->nentries : pass + 1); e++) {
            if (!is_masked_kind(g->entries[e].kind)) continue;
            const float *w = cn_entry_data(g, e);
            for (size_t i = 0; i < g->entries[e].count; i++) below += fabsf(w[i]) < t;
        }
        size_t ties = k == SIZE_MAX ? 0 : k - below;
        for (int e = cfg->global ? 0 : pass; e < (cfg->global ? g->nentries : pass + 1); e++) {
            if (!is_masked_kind(g->entries[e].kind)) continue;
            float *w = cn_entry_data(g, e);
            uint8_t *mk = m->mask + g->entries[e].offset;
            for (size_t i = 0; i < g->entries[e].count; i++) {
                float a = fabsf(w[i]);
                if (a < t || (a == t && ties && ties--)) {
                    w[i] = 0;
                    mk[i] = 0;
                }
            }
        }
    }
    free(v);
    cn_graph_params_changed(g);
    return CN_OK;
}

/* ---------------------------------------------------------------- whole operations */

cn_status cn_prune_select(const cn_model *m, const cn_prune_config *cfg, uint8_t **keep,
                          int *total) {
    if (!m || !cfg || !keep) return cn_error(CN_ERR_ARG, "cn_prune_select: NULL argument");
    *keep = NULL;
    CN_TRY(not_int8(m));
    CN_TRY(check_config(cfg));
    if (cfg->method == CN_PRUNE_MAGNITUDE)
        return cn_error(CN_ERR_ARG, "magnitude pruning selects weights, not channels");
    groups gs;
    CN_TRY(find_groups(&m->g, &gs));
    uint8_t *k = calloc((size_t)gs.total + 1, 1);
    cn_status st = k ? select_channels(&m->g, &gs, cfg, k) : cn_error(CN_ERR_NOMEM, "out of memory");
    groups_free(&gs);
    if (st != CN_OK) {
        free(k);
        return st;
    }
    *keep = k;
    if (total) *total = gs.total;
    return CN_OK;
}

cn_status cn_prune(cn_model **out, const cn_model *m, const cn_prune_config *cfg) {
    if (!out || !m || !cfg) return cn_error(CN_ERR_ARG, "cn_prune: NULL argument");
    *out = NULL;
    CN_TRY(not_int8(m));
    CN_TRY(check_config(cfg));
    if (cfg->method == CN_PRUNE_MAGNITUDE) {
        cn_model *p;
        CN_TRY(cn_model_new_arch(&p, &m->arch, m->threads));
        cn_model_copy_state(p, m);
        cn_status st = magnitude_mask(p, cfg);
        if (st != CN_OK) {
            cn_model_free(p);
            return st;
        }
        *out = p;
        return CN_OK;
    }
    uint8_t *keep;
    CN_TRY(cn_prune_select(m, cfg, &keep, NULL));
    cn_status st = cn_prune_surgery(out, m, keep);
    free(keep);
    return st;
}

/* In place, for gradual pruning during training: masks and zeroes what cn_prune would remove,
 * the model keeping its shape (structured: the producer filters, biases and BN scale and shift of
 * dropped channels). */
cn_status cn_prune_mask(cn_model *m, const cn_prune_config *cfg) {
    if (!m || !cfg) return cn_error(CN_ERR_ARG, "cn_prune_mask: NULL argument");
    CN_TRY(not_int8(m));
    CN_TRY(check_config(cfg));
    if (cfg->method == CN_PRUNE_MAGNITUDE) return magnitude_mask(m, cfg);
    groups gs;
    CN_TRY(find_groups(&m->g, &gs));
    uint8_t *keep = calloc((size_t)gs.total + 1, 1);
    cn_status st = keep ? select_channels(&m->g, &gs, cfg, keep)
                        : cn_error(CN_ERR_NOMEM, "out of memory");
    if (st == CN_OK) st = cn_model_mask_from_zeros(m);
    int off = 0;
    for (int i = 0; st == CN_OK && i < gs.n; i++) {
        const group *gr = &gs.g[i];
        for (int j = 0; j < gr->nm; j++) {
            const cn_entry *en = &m->g.entries[gr->m[j].entry];
            if (gr->m[j].dim != 0 || !cn_entry_is_param(en->kind)) continue;
            size_t per = en->count / (size_t)gr->channels;
            float *w = cn_entry_data(&m->g, gr->m[j].entry);
            uint8_t *mk = m->mask + en->offset;
            /* internal layouts keep dim 0 outermost (OHWI, vectors) */
            for (int c = 0; c < gr->channels; c++)
                if (!keep[off + c])
                    for (size_t q = 0; q < per; q++) {
                        w[(size_t)c * per + q] = 0;
                        mk[(size_t)c * per + q] = 0;
                    }
        }
        off += gr->channels;
    }
    cn_graph_params_changed(&m->g);
    free(keep);
    groups_free(&gs);
    return st;
}

/* Removes the channels whose producer filter is entirely zero: the end of gradual structured
 * pruning. */
cn_status cn_prune_compact(cn_model **out, const cn_model *m) {
    if (!out || !m) return cn_error(CN_ERR_ARG, "cn_prune_compact: NULL argument");
    *out = NULL;
    CN_TRY(not_int8(m));
    groups gs;
    CN_TRY(find_groups(&m->g, &gs));
    uint8_t *keep = calloc((size_t)gs.total + 1, 1);
    if (!keep) {
        groups_free(&gs);
        return cn_error(CN_ERR_NOMEM, "out of memory");
    }
    int off = 0;
    for (int i = 0; i < gs.n; i++) {
        const group *gr = &gs.g[i];
        const cn_entry *en = &m->g.entries[m->g.nodes[gr->producer].p[0]];
        const float *w = cn_entry_data(&m->g, m->g.nodes[gr->producer].p[0]);
        size_t per = en->count / (size_t)gr->channels;
        int kept = 0;
        for (int c = 0; c < gr->channels; c++) {
            int live = 0;
            for (size_t q = 0; q < per && !live; q++) live = w[(size_t)c * per + q] != 0;
            keep[off + c] = (uint8_t)live;
            kept += live;
        }
        /* a group pruned to nothing keeps its first channel: the model must stay whole */
        if (!kept) keep[off] = 1;
        off += gr->channels;
    }
    cn_status st = surgery(out, m, &gs, keep);
    free(keep);
    groups_free(&gs);
    return st;
}
