#include "io/folder.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/status.h"
#include "io/image.h"

/* deeper than this is a symbolic-link loop, or not an image dataset */
#define MAX_DEPTH 32

int cn_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* a file found by the walk: its path and the length of its directory part */
typedef struct entry {
    char *path;
    size_t rootlen;
} entry;

typedef struct list {
    entry *e;
    size_t n, cap;
} list;

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* sorted(os.walk(...)) orders directories by their path string, then sorted(files) */
static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    size_t m = x->rootlen < y->rootlen ? x->rootlen : y->rootlen;
    int c = memcmp(x->path, y->path, m);
    if (c) return c;
    if (x->rootlen != y->rootlen) return x->rootlen < y->rootlen ? -1 : 1;
    return strcmp(x->path + x->rootlen + 1, y->path + y->rootlen + 1);
}

static void list_free(list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->e[i].path);
    free(l->e);
    memset(l, 0, sizeof *l);
}

/* os.walk(followlinks=True) */
static cn_status walk(list *out, const char *root, int depth) {
    if (depth > MAX_DEPTH)
        return cn_error(CN_ERR_FORMAT, "%s: folders nested more than %d deep (a link loop?)", root,
                        MAX_DEPTH);
    DIR *dh = opendir(root);
    if (!dh) return cn_error(CN_ERR_IO, "%s: cannot list: %s", root, strerror(errno));
    cn_status st = CN_OK;
    struct dirent *de;
    char **subdirs = NULL;
    size_t nsub = 0, capsub = 0;
    while (st == CN_OK && (de = readdir(dh))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = join(root, de->d_name);
        if (!p) {
            st = cn_error(CN_ERR_NOMEM, "out of memory");
            break;
        }
        if (cn_is_dir(p)) {
            if (nsub == capsub) {
                capsub = capsub ? 2 * capsub : 16;
                char **s = realloc(subdirs, capsub * sizeof *s);
                if (!s) {
                    free(p);
                    st = cn_error(CN_ERR_NOMEM, "out of memory");
                    break;
                }
                subdirs = s;
            }
            subdirs[nsub++] = p;
            continue;
        }
        if (!cn_image_has_ext(de->d_name)) {
            free(p);
            continue;
        }
        if (out->n == out->cap) {
            size_t nc = out->cap ? 2 * out->cap : 256;
            entry *e = realloc(out->e, nc * sizeof *e);
            if (!e) {
                free(p);
                st = cn_error(CN_ERR_NOMEM, "out of memory");
                break;
            }
            out->e = e;
            out->cap = nc;
        }
        out->e[out->n].path = p;
        out->e[out->n].rootlen = strlen(root);
        out->n++;
    }
    closedir(dh);
    for (size_t i = 0; i < nsub; i++) {
        if (st == CN_OK) st = walk(out, subdirs[i], depth + 1);
        free(subdirs[i]);
    }
    free(subdirs);
    return st;
}

void cn_folder_free(cn_folder *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->paths ? f->paths[i] : NULL);
    for (int i = 0; i < f->nclasses; i++) free(f->classes ? f->classes[i] : NULL);
    free(f->paths);
    free(f->labels);
    free(f->classes);
    memset(f, 0, sizeof *f);
}

static cn_status add_class(cn_folder *f, const char *dir, const char *cls, int label, size_t *cap) {
    char *root = join(dir, cls);
    if (!root) return cn_error(CN_ERR_NOMEM, "out of memory");
    list l = {0};
    cn_status st = walk(&l, root, 0);
    if (st == CN_OK && l.n == 0)
        st = cn_error(CN_ERR_FORMAT, "%s: class folder '%s' holds no .jpg, .jpeg or .png file",
                      dir, cls);
    if (st == CN_OK && (size_t)f->n + l.n > (size_t)1 << 30)
        st = cn_error(CN_ERR_FORMAT, "%s: more than 2^30 images", dir);
    if (st == CN_OK && (size_t)f->n + l.n > *cap) {
        size_t nc = *cap ? *cap : 1024;
        while (nc < (size_t)f->n + l.n) nc *= 2;
        char **p = realloc(f->paths, nc * sizeof *p);
        if (p) f->paths = p;
        int32_t *lb = p ? realloc(f->labels, nc * sizeof *lb) : NULL;
        if (lb) f->labels = lb;
        if (!p || !lb) st = cn_error(CN_ERR_NOMEM, "out of memory");
        else *cap = nc;
    }
    if (st == CN_OK) {
        qsort(l.e, l.n, sizeof *l.e, cmp_entry);
        for (size_t i = 0; i < l.n; i++) {
            f->paths[f->n] = l.e[i].path;
            f->labels[f->n] = label;
            f->n++;
            l.e[i].path = NULL;
        }
    }
    list_free(&l);
    free(root);
    return st;
}

cn_status cn_folder_open(cn_folder *f, const char *dir) {
    memset(f, 0, sizeof *f);
    DIR *dh = opendir(dir);
    if (!dh) return cn_error(CN_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    size_t cap = 0;
    cn_status st = CN_OK;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *p = join(dir, de->d_name);
        if (!p) {
            st = cn_error(CN_ERR_NOMEM, "out of memory");
            break;
        }
        int isdir = cn_is_dir(p);
        free(p);
        if (!isdir) continue;
        if ((size_t)f->nclasses == cap) {
            cap = cap ? 2 * cap : 64;
            char **c = realloc(f->classes, cap * sizeof *c);
            if (!c) {
                st = cn_error(CN_ERR_NOMEM, "out of memory");
                break;
            }
            f->classes = c;
        }
        if (!(f->classes[f->nclasses] = strdup(de->d_name))) {
            st = cn_error(CN_ERR_NOMEM, "out of memory");
            break;
        }
        f->nclasses++;
    }
    closedir(dh);
    if (st == CN_OK && f->nclasses == 0)
        st = cn_error(CN_ERR_FORMAT, "%s: no class folders (an image folder holds one subfolder "
                      "of images per class)", dir);
    if (st == CN_OK) qsort(f->classes, f->nclasses, sizeof *f->classes, cmp_str);
    size_t pcap = 0;
    for (int c = 0; st == CN_OK && c < f->nclasses; c++) st = add_class(f, dir, f->classes[c], c, &pcap);
    if (st != CN_OK) cn_folder_free(f);
    return st;
}
