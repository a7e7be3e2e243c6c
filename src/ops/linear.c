/* linear and the softmax cross-entropy loss.
 * https://pytorch.org/docs/1.13/generated/torch.nn.Linear.html
 * https://pytorch.org/docs/1.13/generated/torch.nn.CrossEntropyLoss.html */
#include <math.h>

#include "kernels/gemm.h"
#include "ops/ops.h"

void cn_linear_forward(float *y, const float *x, const float *w, const float *b, int n, int k,
                       int oc) {
    cn_sgemm(0, 1, n, oc, k, 1.0f, x, k, w, k, 0.0f, y, oc);
    if (b)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < oc; j++) y[(size_t)i * oc + j] += b[j];
}

void cn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int n, int k, int oc) {
    if (dw) cn_sgemm(1, 0, oc, k, n, 1.0f, dy, oc, x, k, 1.0f, dw, k);
    if (dx) cn_sgemm(0, 0, n, k, oc, 1.0f, dy, oc, w, k, 1.0f, dx, k);
    if (db)
        for (int j = 0; j < oc; j++) {
            double acc = 0;
            for (int i = 0; i < n; i++) acc += dy[(size_t)i * oc + j];
            db[j] += (float)acc;
        }
}

/* With q = (1 - s) * onehot(label) + s / K, loss_i = -sum_j q_j log p_j and
 * d loss_i / d logit_j = p_j - q_j; the mean over the batch divides both by N. */
float cn_softmax_xent(float *dlogits, int *correct, const float *logits, const int32_t *labels,
                      int n, int k, float smoothing) {
    double total = 0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        int best = 0;
        float mx = z[0];
        for (int j = 1; j < k; j++)
            if (z[j] > mx) mx = z[j], best = j;
        double se = 0, sz = 0;
        for (int j = 0; j < k; j++) {
            se += exp((double)z[j] - mx);
            sz += (double)z[j] - mx;
        }
        double lse = log(se);
        int y = labels[i];
        double nll = lse - ((double)z[y] - mx);
        double smooth = lse - sz / k;
        total += (1.0 - smoothing) * nll + smoothing * smooth;
        hits += best == y;
        if (dlogits) {
            float *g = dlogits + (size_t)i * k;
            for (int j = 0; j < k; j++) {
                double p = exp((double)z[j] - mx - lse);
                double q = smoothing / k + (j == y ? 1.0 - smoothing : 0.0);
                g[j] = (float)((p - q) / n);
            }
        }
    }
    if (correct) *correct = hits;
    return (float)(total / n);
}
