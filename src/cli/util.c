#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

void cli_err(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "convnet %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_fail(const char *cmd, cn_status st) {
    cli_err(cmd, "%s", cn_errmsg());
    return st == CN_ERR_ARG ? EXIT_USAGE : EXIT_FAIL;
}

int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        cli_err(cmd, "%s '%s': expected a whole number in [%ld, %ld]", opt, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') {
        cli_err(cmd, "%s '%s': expected a non-negative whole number", opt, s);
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) {
        cli_err(cmd, "%s '%s': expected a non-negative whole number", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        cli_err(cmd, "%s '%s': expected a number in [%g, %g]", opt, s, lo, hi);
        return -1;
    }
    *out = (float)v;
    return 0;
}

int cli_double(const char *cmd, const char *opt, const char *s, double lo, double hi,
               double *out) {
    float unused;
    if (cli_float(cmd, opt, s, lo, hi, &unused)) return -1;
    *out = strtod(s, NULL);
    return 0;
}

int cli_size(const char *cmd, const char *opt, const char *s, int *h, int *w) {
    char *end;
    errno = 0;
    long a = strtol(s, &end, 10), b = a;
    if (!errno && end != s && (*end == 'x' || *end == 'X')) {
        const char *p = end + 1;
        b = strtol(p, &end, 10);
        if (end == p) end = (char *)s;
    }
    if (errno || end == s || *end || a < 1 || b < 1 || a > 8192 || b > 8192) {
        cli_err(cmd, "%s '%s': expected HxW or S with sizes in [1, 8192]", opt, s);
        return -1;
    }
    *h = (int)a;
    *w = (int)b;
    return 0;
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_err(cmd, "%s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_fmt_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

void cli_progress_init(cli_progress *p) {
    p->tty = isatty(2);
    p->last = 0;
}

void cli_progress_line(cli_progress *p, int force, const char *fmt, ...) {
    double t = cli_now();
    /* a terminal is redrawn ten times a second; a log gets a line every 10 s */
    if (!force && t - p->last < (p->tty ? 0.1 : 10.0)) return;
    p->last = t;
    va_list ap;
    va_start(ap, fmt);
    if (p->tty) fputs("\r\033[K", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (!p->tty) fputc('\n', stderr);
    fflush(stderr);
}

void cli_progress_done(cli_progress *p) {
    if (p->tty) fputc('\n', stderr);
}

void cli_print_json(cJSON *j) {
    char *s = j ? cJSON_Print(j) : NULL;
    puts(s ? s : "{}");
    free(s);
    cJSON_Delete(j);
}

void cli_train_progress_init(cli_train_progress *s, int json) {
    cli_progress_init(&s->bar);
    s->json = json;
}

void cli_train_on_progress(const cn_train_progress *p, void *user) {
    cli_train_progress *s = user;
    char eta[32];
    cli_fmt_duration(eta, sizeof eta, p->eta_s);
    if (p->phase == 0) {
        int width = 24, fill = (int)(width * p->step / (p->steps_per_epoch ? p->steps_per_epoch : 1));
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        cli_progress_line(&s->bar, p->step == p->steps_per_epoch,
                          "epoch %d/%d [%s] %lld/%lld loss %.4f acc %.2f%% lr %.4g %.0f img/s ETA %s",
                          p->epoch, p->epochs, bar, (long long)p->step,
                          (long long)p->steps_per_epoch, p->loss, 100 * p->acc, p->lr,
                          p->img_per_s, eta);
    } else {
        cli_progress_done(&s->bar);
        /* the per-epoch result is a result: stdout, unless --json owns stdout */
        FILE *f = s->json ? stderr : stdout;
        fprintf(f, "epoch %d/%d train_loss %.4f train_acc %.2f%% test_loss %.4f test_acc %.2f%% "
                   "%.0f img/s\n",
                p->epoch, p->epochs, p->loss, 100 * p->acc, p->test_loss, 100 * p->test_acc,
                p->img_per_s);
        fflush(f);
    }
}

static const char *const method_names[] = {"l2", "l1", "bn", "magnitude"};

const char *cli_prune_method_name(cn_prune_method m) {
    return (unsigned)m < 4 ? method_names[m] : "?";
}

int cli_prune_method(const char *cmd, const char *opt, const char *s, cn_prune_method *out) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, method_names[i])) {
            *out = (cn_prune_method)i;
            return 0;
        }
    cli_err(cmd, "%s '%s': expected l2, l1, bn or magnitude", opt, s);
    return -1;
}

int cli_prune_scope(const char *cmd, const char *opt, const char *s, int *global) {
    if (!strcmp(s, "layer") || !strcmp(s, "global")) {
        *global = !strcmp(s, "global");
        return 0;
    }
    cli_err(cmd, "%s '%s': expected layer or global", opt, s);
    return -1;
}

int cli_fraction(const char *cmd, const char *opt, const char *s, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v >= 1) {
        cli_err(cmd, "%s '%s': expected a fraction in [0, 1)", opt, s);
        return -1;
    }
    *out = (float)v;
    /* a value just below 1 must not round up to 1 in float */
    if (*out >= 1.0f) *out = 0.99999994f;
    return 0;
}
